"""The kernel library: eNTKs, their kernels and spectra for any ``nn.Module`` (torch).

Knows nothing of the workflow, the config or the model kinds: it imports torch, numpy, its own
modules and ``entk.shared`` only. The public names are re-exported by ``entk``.
"""
