"""The type of a model kind, and the checks its settings share.

A kind is one ``Kind`` object in its own module of this package (``entk.kinds.tms``, …), listed in
``entk.kinds.registry``. Snakemake imports every kind module while it parses the workflow, so a kind
module imports neither torch nor numpy at its top: its builder, inputs and recipe import the torch
code they call (models, training loops) when a job calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # names for the annotations only: Snakemake imports this module without torch
    import pandas as pd
    import torch


class TrainRecipe(Protocol):
    """A training recipe: a kind's ``train`` function, or a user's ``weights: {train: file.py:function}``.

    Trains a fresh model from ``settings``, drawing from streams keyed by ``seed`` and ``key``; at
    each step of ``checkpoint_steps`` calls ``save_checkpoint(step, state)`` with a state holding the
    model's ``state_dict`` under "model"; given such a state as ``resume``, continues from it; returns
    the history (one row per checkpoint step).
    """

    def __call__(
        self,
        settings: dict,
        seed: int,
        key: str,
        *,
        device: torch.device | str,
        checkpoint_steps: Sequence[int],
        save_checkpoint: Callable[[int, dict[str, Any]], None],
        resume: dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
    ) -> pd.DataFrame: ...


@dataclass(frozen=True)
class Kind:
    """A model kind: everything the workflow needs to train, load and probe its models.

    ``settings``: each setting's JSON schema (description, type, bounds, and its ``default`` where
    it has one): the config schema's ``$defs/<name>_settings`` are made from it
    (``entk.pipeline.config.load_schema``). ``functions``: "build" (settings → nn.Module), "inputs"
    (settings, seed, key → probe inputs (N, ...)), "train" (a ``TrainRecipe``), and where the kind
    has them "importance" (settings → (C,) output importances, for ``output_weights: {importance:
    β}``) and the language-model roles ("corpus", "save_pretrained", "contexts", "directories",
    "resolve"). ``checkpoint_steps`` (settings → steps with a checkpoint), ``check`` (settings → one
    message per bad setting), ``parameters`` (settings → parameter names of the built model) and
    ``sizes`` (settings → (samples N, outputs C) of the probe inputs and the model, or None where
    the settings do not fix them) run while the workflow parses: layer groups and top_k are checked
    against them before any training.
    """

    name: str
    description: str
    settings: Mapping[str, Mapping[str, Any]]
    functions: Mapping[str, Callable]
    checkpoint_steps: Callable[[dict], list[int]]
    check: Callable[[dict], list[str]] = field(default=lambda settings: [])
    parameters: Callable[[dict], list[str]] = field(default=lambda settings: [])
    sizes: Callable[[dict], tuple[int, int] | None] = field(default=lambda settings: None)

    @property
    def defaults(self) -> Mapping[str, Any]:
        """Every setting with its default (None where it has none)."""
        return MappingProxyType({key: spec.get("default") for key, spec in self.settings.items()})

    def settings_schema(self) -> dict:
        """The JSON schema of the kind's settings map."""
        return {
            "description": f"Settings of kind {self.name}: {self.description}.",
            "type": "object",
            "additionalProperties": False,
            "properties": {key: dict(spec) for key, spec in self.settings.items()},
        }

    def train(self) -> TrainRecipe:
        """The kind's training recipe."""
        return self.function("train")

    def function(self, role: str) -> Callable:
        """The kind's ``role`` function ("build", "inputs", "train", "importance", …)."""
        if role not in self.functions:
            raise ValueError(f"kind {self.name!r} has no {role!r} function")
        return self.functions[role]

    def with_defaults(self, given: Mapping | None) -> dict:
        """``given`` over the defaults; unknown keys are an error naming the valid ones."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.settings))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown} for kind {self.name!r}; valid settings: {sorted(self.settings)}"
            )
        return {**self.defaults, **given}


def every(settings: dict, last: str, step: str) -> list[int]:
    """0, step, 2·step, …, last (last always included), from the settings named ``last`` and ``step``."""
    return sorted({*range(0, settings[last] + 1, settings[step]), settings[last]})


def positive_ints(settings: dict, keys: tuple[str, ...], kind: str) -> list[str]:
    """One message per setting of ``keys`` that is not a positive integer."""
    return [
        f"setting '{key}' of kind {kind}: {settings[key]!r} must be a positive integer"
        for key in keys
        if not isinstance(settings[key], int) or isinstance(settings[key], bool) or settings[key] < 1
    ]


def fraction(settings: dict, key: str, kind: str, lo_open=True, hi_open=True) -> list[str]:
    """A message if the setting ``key`` is not a number in (0, 1), closed at the ends asked for."""
    v = settings[key]
    ok = isinstance(v, int | float) and not isinstance(v, bool) and (0 < v if lo_open else 0 <= v)
    ok = ok and (v < 1 if hi_open else v <= 1)
    interval = f"{'(' if lo_open else '['}0, 1{')' if hi_open else ']'}"
    return [] if ok else [f"setting '{key}' of kind {kind}: {v!r} must lie in {interval}"]


def rates(settings: dict, kind: str) -> list[str]:
    """The optimiser's lr (> 0) and weight_decay (≥ 0), each a number."""
    return [
        f"setting '{k}' of kind {kind}: {settings[k]!r} must be a {'positive' if k == 'lr' else 'non-negative'} number"
        for k in ("lr", "weight_decay")
        if not isinstance(settings[k], int | float)
        or isinstance(settings[k], bool)
        or settings[k] < 0
        or (k == "lr" and settings[k] == 0)
    ]
