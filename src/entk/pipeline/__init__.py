"""The workflow's plumbing: the config and its experiments, the jobs' runners, preflight checks.

The top layer: may import every other package. ``config``, ``experiments``, ``lm_config`` and
``configdoc`` run while Snakemake parses the workflow, so they import neither torch nor numpy.
"""
