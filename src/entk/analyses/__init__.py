"""The analyses of what the jobs wrote: spectra, cliffs, rotations, metrics, claims, detectors.

Torch-free (numpy, pandas, scipy): reads arrays and tables only, imports ``entk.shared`` and its
own modules. tests/test_style.py holds the whole package to that.
"""
