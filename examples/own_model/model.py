"""A model of your own for the entk workflow: a 2-layer MLP on data with a planted structure.

The data are four Gaussian clusters in d dimensions, one per class, whose centres differ only in
three planted directions x₀, x₁, x₂ (the other d − 3 coordinates are noise). The structure is
known, so the workflow's output can be checked: the eNTK's top cliff should sit after 4
eigenvalues (a constant and the three planted directions), and its eigenspace should hold the
four class indicators — the candidate features in labels.npy, the probe inputs' classes, which
``python model.py`` writes.

The workflow calls ``build`` and ``inputs`` with the config's ``settings`` as keyword arguments
(each function receives the ones it names), and ``train`` — named by the config's
``weights: {train: model.py:train, steps: [...]}`` — with the recipe signature below.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

PROBE_SEED = 1234  # the probe inputs are the same for every seed: labels.npy describes them
DEFAULTS = {"d": 8, "width": 64, "n_probe": 128, "spread": 0.5, "n_train": 256, "lr": 0.01, "weight_decay": 0.0}
CLASSES = 4
# Cluster centres: alternate corners of the cube [-2, 2]³ in the planted directions x₀, x₁, x₂ (a
# regular tetrahedron), so each class indicator is an affine function of those three coordinates.
CORNERS = 2.0 * torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float32)


class MLP(nn.Module):
    """x (N, d) → tanh(hidden layer) (N, width) → readout logits (N, 4)."""

    def __init__(self, d: int, width: int):
        super().__init__()
        self.hidden, self.readout = nn.Linear(d, width), nn.Linear(width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.tanh(self.hidden(x)))


def build(d: int = DEFAULTS["d"], width: int = DEFAULTS["width"]) -> nn.Module:
    """An untrained MLP of the settings' shape (the workflow loads each checkpoint into it)."""
    return MLP(d, width)


def sample(n: int, d: int, spread: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (n, d) and their classes (n,): class c's points scatter around CORNERS[c] in
    (x₀, x₁, x₂), zero elsewhere, with Gaussian noise of standard deviation ``spread`` everywhere."""
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    x = spread * torch.randn(n, d, generator=gen)
    x[:, :3] += CORNERS[labels]
    return x, labels


def probe(d: int = DEFAULTS["d"], n_probe: int = DEFAULTS["n_probe"], spread: float = DEFAULTS["spread"]):
    """The probe inputs (n_probe, d) and their classes (n_probe,), drawn from a fixed seed."""
    return sample(n_probe, d, spread, torch.Generator().manual_seed(PROBE_SEED))


def inputs(d: int = DEFAULTS["d"], n_probe: int = DEFAULTS["n_probe"], spread: float = DEFAULTS["spread"]):
    """The probe inputs (n_probe, d) whose eNTK the workflow analyses."""
    return probe(d, n_probe, spread)[0]


def train(
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
    """Full-batch AdamW on cross-entropy over n_train fresh points from the same clusters.

    The initialisation and the training set derive from (seed, key) alone, so equal seeds give
    equal runs. A checkpoint's state also holds the optimiser and the history, so a run resumed
    from it continues bit-identically. History: step, loss, train_accuracy, probe_accuracy."""
    s = {**DEFAULTS, **settings}
    stream = zlib.crc32(key.encode(), seed)
    with torch.random.fork_rng():  # torch's initialisers draw from the global generator
        torch.manual_seed(stream)
        model = build(s["d"], s["width"])
    x, y = sample(s["n_train"], s["d"], s["spread"], torch.Generator().manual_seed(stream + 1))
    px, py = probe(s["d"], s["n_probe"], s["spread"])
    model, x, y, px, py = (t.to(device) for t in (model, x, y, px, py))
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])

    def record(step: int) -> dict:
        with torch.no_grad():
            logits = model(x)
            return {
                "step": step,
                "loss": nn.functional.cross_entropy(logits, y).item(),
                "train_accuracy": (logits.argmax(1) == y).double().mean().item(),
                "probe_accuracy": (model(px).argmax(1) == py).double().mean().item(),
            }

    def save(step: int) -> None:
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "history": rows}
        save_checkpoint(step, copy.deepcopy(state))
        log(f"step {step}: loss {rows[-1]['loss']:.4f}, probe accuracy {rows[-1]['probe_accuracy']:.3f}")

    if resume is None:
        start, rows = 0, [record(0)]
        if 0 in checkpoint_steps:
            save(0)
    else:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        start, rows = resume["step"], list(resume["history"])
    for step in range(start + 1, max(checkpoint_steps) + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        rows.append(record(step))
        if step in checkpoint_steps:
            save(step)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    np.save("labels.npy", probe()[1].numpy())
