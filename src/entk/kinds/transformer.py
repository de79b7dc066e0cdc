"""The paper's 1-layer Transformer on (a + b) mod p (docs/spec.md §3): the model, its data, the
author's random draws and the training loop, in torch. The kind ``modadd_transformer``
(``entk.kinds.modadd_transformer``) builds, probes and trains it through these; its analyses, which
need no torch, are in ``entk.analyses.transformer_analysis``.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entk.kinds.training import HISTORY_COLUMNS, TrainingDiverged, resume_state
from entk.shared import generator

TENSORS = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U")


# --- The model ---


class Transformer(nn.Module):
    """One-layer attention-only-then-MLP Transformer, tokens (N, 3) int64 -> logits (N, p + 1) (paper §3).

    No biases, no LayerNorm. Residual stream x = W_E[tok] + W_pos; x += attn(x); x += mlp(x);
    logits = x[:, -1] @ W_U. W_Q, W_K, W_V are (heads, d_head, d_model); W_O (d_model, heads·d_head)
    maps the concatenated heads z to z·W_Oᵀ, as the author's einsum('m n, b s n -> b s m') does;
    W_in (d_model, d_mlp), W_out (d_mlp, d_model), W_U (d_model, vocab). With one layer only the
    last position reaches the output, so only its query, attention row and MLP are computed: the
    causal mask hides nothing from the last position and the other rows of the residual stream
    never reach the logits.
    """

    def __init__(
        self,
        p: int = 29,
        d_model: int = 64,
        n_heads: int = 4,
        d_head: int = 16,
        d_mlp: int = 256,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if n_heads * d_head != d_model:
            raise ValueError(f"d_model ({d_model}) must equal n_heads·d_head ({n_heads}·{d_head})")
        self.p, self.n_heads, self.d_head = p, n_heads, d_head
        vocab = p + 1

        def draw(*shape: int, scale: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(shape, generator=generator) / math.sqrt(scale))

        # Draw order and scales as the paper's notebook states them (paper §3).
        self.W_E = draw(vocab, d_model, scale=d_model)
        self.W_pos = draw(3, d_model, scale=d_model)
        self.W_Q = draw(n_heads, d_head, d_model, scale=d_model)
        self.W_K = draw(n_heads, d_head, d_model, scale=d_model)
        self.W_V = draw(n_heads, d_head, d_model, scale=d_model)
        self.W_O = draw(d_model, n_heads * d_head, scale=d_model)
        self.W_in = draw(d_model, d_mlp, scale=d_mlp)
        self.W_out = draw(d_mlp, d_model, scale=d_model)
        self.W_U = draw(d_model, vocab, scale=vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        n, t = tokens.shape
        h, dh = self.n_heads, self.d_head
        x = self.W_E[tokens] + self.W_pos[:t]  # (n, t, d)
        last = x[:, -1]  # (n, d)
        # Heads stacked as rows h·d_head + j of a (heads·d_head, d_model) map.
        q = (last @ self.W_Q.flatten(0, 1).T).view(n, h, 1, dh)
        k = (x @ self.W_K.flatten(0, 1).T).view(n, t, h, dh).transpose(1, 2)  # (n, h, t, dh)
        v = (x @ self.W_V.flatten(0, 1).T).view(n, t, h, dh).transpose(1, 2)
        attn = torch.softmax((q @ k.transpose(2, 3)) / math.sqrt(dh), dim=-1)  # (n, h, 1, t)
        z = (attn @ v).reshape(n, h * dh)
        resid = last + z @ self.W_O.T
        resid = resid + torch.relu(resid @ self.W_in) @ self.W_out
        return resid @ self.W_U


# --- The data and the draws ---


def sequences(p: int) -> Tensor:
    """All p² sequences (a, b, '='), int64 (p², 3), row i = a·p + b."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1), torch.full((p * p,), p)], dim=1)


def labels(p: int) -> Tensor:
    """(a + b) mod p for row i = a·p + b, int64 (p²,)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return ((a + b) % p).reshape(-1)


def split(p: int, train_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Train rows = the first round(fraction·p²) of one shuffle of the p² rows, the rest test; each sorted."""
    perm = torch.randperm(p * p, generator=generator)
    n_train = round(train_fraction * p * p)
    return perm[:n_train].sort().values, perm[n_train:].sort().values


def author_split(p: int, train_fraction: float) -> tuple[Tensor, Tensor]:
    """The notebook's split: rows a·p + b of the pairs [(a, b, p) for a, b] after Python's
    ``random.seed(0); random.shuffle``, the first int(fraction·p²) train, the rest test, in the
    shuffled order (the order a DataLoader indexes)."""
    pairs = [(a, b, p) for a in range(p) for b in range(p)]
    random.Random(0).shuffle(pairs)
    rows = torch.tensor([a * p + b for a, b, _ in pairs])
    n_train = int(train_fraction * len(pairs))
    return rows[:n_train], rows[n_train:]


def _int64_draw(stream: torch.Generator) -> int:
    """One draw of ``torch.empty((), dtype=torch.int64).random_()``, the DataLoader's seed draw."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=stream).item())


def epoch_order(n_train: int, stream: torch.Generator, rng: str) -> Tensor:
    """Positions (n_train,) of the train rows in one epoch's batch order.

    ``entk``: one ``randperm`` of ``stream``. ``author``: as ``iter(DataLoader(shuffle=True))``
    draws from the global stream: the iterator's base seed, then the RandomSampler's seed, which
    seeds a fresh generator for the ``randperm``.
    """
    if rng == "entk":
        return torch.randperm(n_train, generator=stream)
    _int64_draw(stream)
    sampler = torch.Generator().manual_seed(_int64_draw(stream))
    return torch.randperm(n_train, generator=sampler)


def evaluation_draws(stream: torch.Generator) -> None:
    """The draws of the notebook's evaluation every log_every epochs: iterating the unshuffled test
    loader (its base seed) and the shuffled train loader (base seed and sampler seed)."""
    for _ in range(3):
        _int64_draw(stream)


def stream(rng: str, seed: int, key: str) -> torch.Generator:
    """The generator of a run's draws: under ``rng`` ``entk``, ``entk.shared.generator(seed, key)``;
    under ``author``, a plain generator seeded with ``seed`` standing for the notebook's
    ``torch.manual_seed(seed)`` global stream (the key unused)."""
    return torch.Generator().manual_seed(seed) if rng == "author" else generator(seed, key)


def _history_row(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    idx: dict[str, Tensor],
    p: int,
    epoch: int,
    epochs: int,
    lr: float,
    log: Callable[[str], None],
) -> dict[str, float]:
    """History row of ``epoch``: cross-entropy on the first p logits and accuracy on the train and test rows."""
    with torch.no_grad():
        logits = model(x)[:, :p]
    row: dict[str, float] = {"epoch": epoch}
    for part, rows in idx.items():
        row[f"{part}_loss"] = F.cross_entropy(logits[rows], y[rows]).item()
        row[f"{part}_acc"] = (logits[rows].argmax(1) == y[rows]).double().mean().item()
    if not math.isfinite(row["train_loss"]):
        raise TrainingDiverged(
            f"training diverged by epoch {epoch}: train loss = {row['train_loss']} (lr {lr:g}); "
            "try a lower learning rate"
        )
    log(
        f"transformer epoch {epoch}/{epochs}: train loss {row['train_loss']:.4g} acc {row['train_acc']:.3f} | "
        f"test loss {row['test_loss']:.4g} acc {row['test_acc']:.3f}"
    )
    return row


def fit(
    s: dict,
    seed: int,
    key: str,
    *,
    logged: Sequence[int],
    device: torch.device | str,
    checkpoint_steps: Sequence[int],
    save_checkpoint: Callable[[int, dict[str, Any]], None],
    resume: dict[str, Any] | None,
    log: Callable[[str], None],
) -> pd.DataFrame:
    """Train a fresh Transformer (paper §3) of the checked settings ``s`` (every key) → history
    (epoch, train_loss, test_loss, train_acc, test_acc), one row per epoch of ``logged``.

    Draws (``stream``) under ``rng: entk``: from ``entk.shared.generator(seed, key)`` the initial
    weights, then the split, then one shuffle of the train rows per epoch. Under ``rng: author``, the
    notebook's: the weights from a generator seeded with ``seed``, ``author_split``, and per epoch
    ``epoch_order`` then, after every log_every-th epoch (0, log_every, …), ``evaluation_draws``.
    AdamW on the cross-entropy of the first p logits over minibatches of ``batch_size`` (the last
    one smaller). History rows at epochs 0, log_every, …,
    epochs, each with both losses and accuracies over the whole train / test set.

    ``save_checkpoint(e, state)`` runs at each epoch e of ``checkpoint_steps`` that has a history
    row, with state = {"model", "optimizer", "generator", "epoch", "history"} (deep copies);
    ``resume`` = such a state continues bit-identically and returns the whole history.
    """
    p, epochs, every, bs, rng = s["p"], s["epochs"], s["log_every"], s["batch_size"], s["rng"]
    logged = set(logged)
    wanted = sorted(set(checkpoint_steps))
    gen = stream(rng, seed, key)
    model = Transformer(p, s["d_model"], s["n_heads"], s["d_head"], s["d_mlp"], generator=gen).to(device)
    frac = s["train_fraction"]
    train_idx, test_idx = author_split(p, frac) if rng == "author" else split(p, frac, gen)
    x, y = sequences(p).to(device), labels(p).to(device)
    idx = {"train": train_idx.to(device), "test": test_idx.to(device)}
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    rows: list[dict[str, float]] = []
    start = 0
    if resume is not None:
        start, rows = resume_state(
            resume, model, opt, lr=s["lr"], weight_decay=s["weight_decay"], last=epochs, generator=gen
        )
    saves = {e for e in wanted if resume is None or e > start}
    n_train = len(train_idx)
    train_dev = idx["train"]
    threads = torch.get_num_threads()
    # Each op is tiny ((64, 3, 64) activations): a second thread only adds synchronisation, and on
    # the shared 2-core machine 2 threads ran 8× slower than 1 (35 s against 4.2 s for 200 epochs).
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        for epoch in range(start, epochs + 1):
            if epoch in logged:
                rows.append(_history_row(model, x, y, idx, p, epoch, epochs, s["lr"], log))
                if epoch in saves:
                    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state()}
                    save_checkpoint(epoch, {**copy.deepcopy(state), "epoch": epoch, "history": [dict(r) for r in rows]})
            if epoch == epochs:
                break
            order = train_dev[epoch_order(n_train, gen, rng).to(device)]
            for batch in order.split(bs):
                loss = F.cross_entropy(model(x[batch])[:, :p], y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if rng == "author" and epoch % every == 0:
                evaluation_draws(gen)
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
