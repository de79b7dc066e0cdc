"""The registry of model kinds: one line per kind, naming the ``Kind`` object of its module.

Adding a kind: write its module in this package (its ``KIND``: settings with their schema and
defaults, checks, checkpoint steps, builder, probe inputs and a ``TrainRecipe``; ``entk.kinds.modadd_mlp``
is the shortest), add its line below and regenerate config/README.md (``entk.pipeline.configdoc``):
the config schema's settings of each kind are made from the kind itself. Snakemake imports this
module while it parses the workflow; the kind modules import neither torch nor numpy at their top.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from entk.kinds import hf_lm, modadd_mlp, modadd_transformer, story_lm, tms
from entk.kinds.kind import Kind, TrainRecipe

__all__ = ["KINDS", "Kind", "TrainRecipe", "get_kind"]

KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        "tms": tms.KIND,
        "modadd_mlp": modadd_mlp.KIND,
        "modadd_transformer": modadd_transformer.KIND,
        "story_lm": story_lm.KIND,
        "hf_causal_lm": hf_lm.KIND,
    }
)


def get_kind(name: str) -> Kind:
    """The registered kind ``name``; an unknown name is an error that lists the known ones."""
    if name not in KINDS:
        raise ValueError(
            f"unknown model kind {name!r}; registered kinds: {sorted(KINDS)} (or use model: file.py:function)"
        )
    return KINDS[name]
