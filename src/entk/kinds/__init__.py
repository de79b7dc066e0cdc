"""The model kinds: what the workflow trains and probes (torch).

``registry`` lists every kind with its defaults and checks; a kind's model, probe inputs and recipe
live in its own module here. A new kind is a module in this package plus its entry in ``registry``.
Imports the kernel library, ``entk.shared`` and its own modules, never the workflow's plumbing.
"""
