"""The registered kinds' models, probe inputs and training recipes (entk.kinds.registry names them).

Each ``train`` draws its initialisation and data from ``entk.shared.generator(seed, …, key)`` so
that an experiment's results depend only on the seed, its key and its settings.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from entk.kinds.models import TMS, ModMLP, modadd_inputs, modadd_labels, modadd_split, tms_data, tms_importance
from entk.kinds.training import train_modadd, train_tms
from entk.shared import generator

# The TMS streams carry a "tms" prefix: the seeds of Figure 1's models since the first release.
_TMS_STREAM = "tms"


def tms_build(settings: dict) -> TMS:
    """An untrained TMS model of the settings' shape."""
    return TMS(settings["n_features"], settings["m"])


def tms_inputs(settings: dict, seed: int, key: str) -> torch.Tensor:
    """The model's one fixed data set (N, n): drawn first from its stream, as training draws it."""
    gen = generator(seed, _TMS_STREAM, key)
    return tms_data(settings["n_points"], settings["n_features"], settings["sparsity"], gen)


def tms_importance_weights(settings: dict) -> torch.Tensor:
    """Feature importances I_i = base^i (n,): the outputs' weights of the importance rescaling."""
    return tms_importance(settings["n_features"], settings["importance_base"])


def tms_train(
    settings: dict,
    seed: int,
    key: str,
    *,
    device: torch.device,
    checkpoint_steps: list[int],
    save_checkpoint: Callable[[int, dict], None],
    resume: dict | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Full-batch Adam on the importance-weighted MSE (docs/spec.md §1); a checkpoint at the last step.

    Seconds long, so a killed job starts over (``resume`` is ignored). History: step, loss."""
    gen = generator(seed, _TMS_STREAM, key)
    x = tms_data(settings["n_points"], settings["n_features"], settings["sparsity"], gen)
    model = TMS(settings["n_features"], settings["m"], generator=gen)
    importance = tms_importance_weights(settings)
    log(f"TMS {key}: n={settings['n_features']} m={settings['m']} S={settings['sparsity']} on {device}")
    losses = train_tms(
        model.to(device),
        x.to(device),
        importance.float().to(device),
        steps=settings["steps"],
        lr=settings["lr"],
        log=log,
    )
    model = model.cpu()
    w = model.W.detach().double()
    log(f"final loss {losses[-1]:.3e}; features with (WᵀW)_ii ≥ 0.75: {int(((w * w).sum(0) >= 0.75).sum())}")
    save_checkpoint(settings["steps"], {"model": model.state_dict()})
    return pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses})


def modadd_mlp_build(settings: dict) -> ModMLP:
    """An untrained modular-addition MLP of the settings' shape."""
    return ModMLP(settings["p"], settings["hidden"])


def modadd_mlp_inputs(settings: dict, seed: int, key: str) -> torch.Tensor:
    """All p² pairs one-hot(a) ‖ one-hot(b) (p², 2p), row a·p + b: the eNTK's inputs (docs/spec.md §2)."""
    return modadd_inputs(settings["p"])


def modadd_mlp_train(
    settings: dict,
    seed: int,
    key: str,
    *,
    device: torch.device,
    checkpoint_steps: list[int],
    save_checkpoint: Callable[[int, dict], None],
    resume: dict | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Full-batch AdamW on MSE vs one-hot targets (docs/spec.md §2); resumable; one row per epoch."""
    p = settings["p"]
    gen = generator(seed, key)
    # Initialisation first, then the split: the order the grokking measurements used.
    model = ModMLP(p, settings["hidden"], generator=gen)
    train_idx, test_idx = modadd_split(p, settings["train_fraction"], gen)
    log(f"p={p} hidden={settings['hidden']}: {len(train_idx)} train / {len(test_idx)} test pairs on {device}")
    return train_modadd(
        model.to(device),
        modadd_inputs(p).to(device),
        modadd_labels(p).to(device),
        train_idx.to(device),
        test_idx.to(device),
        epochs=settings["epochs"],
        lr=settings["lr"],
        weight_decay=settings["weight_decay"],
        checkpoint_epochs=checkpoint_steps,
        save_checkpoint=save_checkpoint,
        resume=resume,
        log=log,
    )
