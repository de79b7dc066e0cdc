"""Training loops for the paper's toy models (spec: docs/spec.md §1 TMS, §2 modular addition)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

HISTORY_COLUMNS = ["epoch", "train_loss", "test_loss", "train_acc", "test_acc"]


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite."""


def _check_finite(loss: float, where: str, lr: float) -> None:
    """Raise TrainingDiverged naming ``where`` (e.g. 'step 12') if ``loss`` is NaN/inf."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"training diverged at {where}: loss = {loss} (learning rate {lr:g}); try a lower learning rate"
        )


def resume_state(
    resume: dict[str, Any],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    *,
    lr: float,
    weight_decay: float,
    last: int,
    generator: torch.Generator | None = None,
) -> tuple[int, list[dict[str, float]]]:
    """Load a state a recipe gave ``save_checkpoint`` into ``model``, ``opt`` (and ``generator``):
    its epoch and the history rows before it (the row of that epoch is recomputed from the same
    weights). The optimiser's lr and weight decay must match the checkpoint's, as a mismatch would
    silently change the run."""
    missing = {"model", "optimizer", "epoch", "history", *(["generator"] if generator is not None else [])}
    missing -= resume.keys()
    if missing:
        raise ValueError(f"resume state lacks {sorted(missing)}; pass a dict given to save_checkpoint")
    saved = resume["optimizer"]["param_groups"][0]
    if (saved["lr"], saved["weight_decay"]) != (lr, weight_decay):
        raise ValueError(
            f"resume state was trained with lr={saved['lr']}, weight_decay={saved['weight_decay']}, "
            f"but this run asks for lr={lr}, weight_decay={weight_decay}"
        )
    start = int(resume["epoch"])
    if not 0 <= start <= last:
        raise ValueError(f"resume epoch {start} lies outside [0, {last}]")
    model.load_state_dict(resume["model"])
    opt.load_state_dict(resume["optimizer"])
    if generator is not None:
        generator.set_state(resume["generator"])
    return start, [dict(r) for r in resume["history"] if r["epoch"] < start]


def train_tms(
    model: nn.Module,
    x: torch.Tensor,
    importance: torch.Tensor,
    *,
    steps: int,
    lr: float,
    log_every: int = 1000,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Full-batch Adam on x (N, n) with importance (n,); returns one loss per step, len == steps.

    Entry t is the importance-weighted MSE mean_{batch, i} I_i (x_i - y_i)^2 of the weights
    *before* step t+1, i.e. the loss whose gradient step t+1 follows (entry 0 = initial model).
    """
    if x.ndim != 2 or importance.shape != (x.shape[1],):
        raise ValueError(f"need x (N, n) and importance (n,), got {tuple(x.shape)} and {tuple(importance.shape)}")
    if steps < 0 or log_every < 1:
        raise ValueError(f"need steps ≥ 0 and log_every ≥ 1, got {steps}, {log_every}")
    # tms_importance is float64; multiplying a float32 residual by it would silently upcast the loss.
    weight = importance.to(dtype=x.dtype, device=x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = (weight * (x - model(x)) ** 2).mean()
        value = loss.item()
        _check_finite(value, f"step {step}", lr)
        losses.append(value)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps:
            log(f"tms step {step}/{steps}: loss {value:.6g}")
    return losses


def _modadd_metrics(
    out: torch.Tensor, target: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """MSE (0-dim tensor, keeps the graph) and accuracy over rows ``idx`` of out (N, p)."""
    loss = ((out[idx] - target[idx]) ** 2).mean()
    acc = (out[idx].argmax(dim=1) == y[idx]).double().mean().item()
    return loss, acc


def train_modadd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    train_idx: torch.Tensor,
    test_idx: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    checkpoint_epochs: Sequence[int],
    save_checkpoint: Callable[[int, dict[str, Any]], None],
    resume: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    log_every: int = 50,
) -> pd.DataFrame:
    """Full-batch AdamW on MSE vs one-hot(y) over x[train_idx]; x (N, 2p), y (N,) -> history.

    One epoch is one optimiser step. History row e describes the weights after e steps (row 0 =
    the initial model): MSE (mean over rows and classes) and argmax accuracy on the train and test
    rows. The train MSE of row e is exactly the loss whose gradient step e+1 follows.

    At every epoch in ``checkpoint_epochs`` (sorted, within [0, epochs]) ``save_checkpoint(e,
    state)`` receives deep copies: state = {"model", "optimizer", "epoch", "history"}, where
    "history" holds rows 0..e. Passing such a state as ``resume`` loads it into ``model``,
    continues with bit-identical arithmetic, saves only checkpoints after the resumed epoch and
    returns the whole history 0..epochs. The optimiser's lr and weight decay must match the
    checkpoint's, as a mismatch would silently change the run.
    """
    if list(checkpoint_epochs) != sorted(checkpoint_epochs) or any(not 0 <= e <= epochs for e in checkpoint_epochs):
        raise ValueError(f"checkpoint_epochs must be sorted and lie in [0, {epochs}], got {list(checkpoint_epochs)}")
    if log_every < 1:
        raise ValueError(f"log_every must be ≥ 1, got {log_every}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rows: list[dict[str, float]] = []
    start = 0
    if resume is not None:
        start, rows = resume_state(resume, model, opt, lr=lr, weight_decay=weight_decay, last=epochs)
    checkpoints = {e for e in checkpoint_epochs if resume is None or e > start}

    for epoch in range(start, epochs + 1):
        # One forward pass over all rows serves both the metrics of row `epoch` and the gradient.
        out = model(x)
        # The model's output width, not y.max(), fixes p: a split may miss the top class.
        target = nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
        train_loss, train_acc = _modadd_metrics(out, target, y, train_idx)
        test_loss, test_acc = _modadd_metrics(out.detach(), target, y, test_idx)
        row = {
            "epoch": epoch,
            "train_loss": train_loss.item(),
            "test_loss": test_loss.item(),
            "train_acc": train_acc,
            "test_acc": test_acc,
        }
        _check_finite(row["train_loss"], f"epoch {epoch}", lr)
        rows.append(row)
        if epoch in checkpoints:
            state = {
                "model": copy.deepcopy(model.state_dict()),
                "optimizer": copy.deepcopy(opt.state_dict()),
                "epoch": epoch,
                "history": [dict(r) for r in rows],
            }
            save_checkpoint(epoch, state)
        if epoch % log_every == 0 or epoch == epochs:
            log(
                f"modadd epoch {epoch}/{epochs}: train loss {row['train_loss']:.4g} acc {train_acc:.3f} | "
                f"test loss {row['test_loss']:.4g} acc {test_acc:.3f}"
            )
        if epoch == epochs:
            break
        opt.zero_grad(set_to_none=True)
        train_loss.backward()
        opt.step()
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
