"""The kind ``tms``: the Toy Model of Superposition on a generated sparse data set (docs/spec.md §1).

Its streams carry a "tms" prefix (the seeds of Figure 1's models since the first release): the data
set is drawn first, then the initial weights, from ``entk.shared.generator(seed, "tms", key)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from entk.kinds.kind import Kind, fraction, positive_ints

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from entk.kinds.models import TMS

_STREAM = "tms"


def build(settings: dict) -> TMS:
    """An untrained TMS model of the settings' shape."""
    from entk.kinds.models import TMS

    return TMS(settings["n_features"], settings["m"])


def inputs(settings: dict, seed: int, key: str) -> torch.Tensor:
    """The model's one fixed data set (N, n): drawn first from its stream, as training draws it."""
    from entk.kinds.models import tms_data
    from entk.shared import generator

    gen = generator(seed, _STREAM, key)
    return tms_data(settings["n_points"], settings["n_features"], settings["sparsity"], gen)


def importance(settings: dict) -> torch.Tensor:
    """Feature importances I_i = base^i (n,): the outputs' weights of the importance rescaling."""
    from entk.kinds.models import tms_importance

    return tms_importance(settings["n_features"], settings["importance_base"])


def train(
    settings: dict,
    seed: int,
    key: str,
    *,
    device: torch.device | str,
    checkpoint_steps: Sequence[int],
    save_checkpoint: Callable[[int, dict[str, Any]], None],
    resume: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Full-batch Adam on the importance-weighted MSE (docs/spec.md §1); a checkpoint at the last step.

    Seconds long, so a killed job starts over (``resume`` is ignored). History: step, loss."""
    import pandas as pd

    from entk.kinds.models import TMS, tms_data
    from entk.kinds.training import train_tms
    from entk.shared import generator

    gen = generator(seed, _STREAM, key)
    x = tms_data(settings["n_points"], settings["n_features"], settings["sparsity"], gen)
    model = TMS(settings["n_features"], settings["m"], generator=gen)
    log(f"TMS {key}: n={settings['n_features']} m={settings['m']} S={settings['sparsity']} on {device}")
    losses = train_tms(
        model.to(device),
        x.to(device),
        importance(settings).float().to(device),
        steps=settings["steps"],
        lr=settings["lr"],
        log=log,
    )
    model = model.cpu()
    w = model.W.detach().double()
    log(f"final loss {losses[-1]:.3e}; features with (WᵀW)_ii ≥ 0.75: {int(((w * w).sum(0) >= 0.75).sum())}")
    save_checkpoint(settings["steps"], {"model": model.state_dict()})
    return pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses})


def check(s: dict) -> list[str]:
    """One message per bad setting."""
    errors = positive_ints(s, ("n_features", "m", "n_points", "steps"), "tms")
    errors += [
        f"setting '{key}' of kind tms: {s[key]} must be at least 2"
        for key in ("n_features", "n_points")
        if not errors and s[key] < 2
    ]
    errors += fraction(s, "importance_base", "tms", hi_open=False)
    # S = 1 makes every feature zero: an all-zero data set trains nothing and its metrics mean nothing.
    errors += fraction(s, "sparsity", "tms", lo_open=False)
    if not isinstance(s["lr"], int | float) or s["lr"] <= 0:
        errors.append(f"setting 'lr' of kind tms: {s['lr']!r} must be a positive number")
    return errors


KIND = Kind(
    name="tms",
    description="Toy Model of Superposition y = ReLU(WᵀW x + b) on a generated sparse data set (docs/spec.md §1)",
    settings={
        "n_features": {"description": "n, the number of features.", "type": "integer", "minimum": 2, "default": 50},
        "m": {"description": "Hidden size m.", "type": "integer", "minimum": 1, "default": 10},
        "sparsity": {
            "description": "S, the probability that a feature is zero; below 1.",
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.3,
        },
        "importance_base": {
            "description": "Importance I_i = base^i.",
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 1,
            "default": 0.8,
        },
        "n_points": {
            "description": "D, the size of the one fixed data set.",
            "type": "integer",
            "minimum": 2,
            "default": 500,
        },
        "steps": {"description": "Full-batch Adam steps.", "type": "integer", "minimum": 1, "default": 5000},
        "lr": {"description": "Adam learning rate.", "type": "number", "exclusiveMinimum": 0, "default": 0.001},
    },
    functions={"build": build, "inputs": inputs, "train": train, "importance": importance},
    checkpoint_steps=lambda s: [s["steps"]],
    check=check,
    parameters=lambda s: ["W", "b"],
    sizes=lambda s: (s["n_points"], s["n_features"]),
)
