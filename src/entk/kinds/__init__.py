"""The model kinds: what the workflow trains and probes.

Each kind is one ``Kind`` object (``entk.kinds.kind``) in its own module here (``tms``,
``modadd_mlp``, ``modadd_transformer``, ``story_lm``, ``hf_lm``), listed in ``registry``; the torch
code they call is in ``models``, ``training``, ``transformer`` and ``stories``. A new kind is a
module in this package plus its line in ``registry``. Imports the kernel library, ``entk.shared``
and its own modules, never the workflow's plumbing.
"""
