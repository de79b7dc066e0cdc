"""Tests for entk.kinds.training: loss decrease, checkpoint/resume, divergence, determinism."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from entk.analyses.metrics import represented_features
from entk.kinds.models import TMS, ModMLP, modadd_inputs, modadd_labels, modadd_split, tms_data, tms_importance
from entk.kinds.training import HISTORY_COLUMNS, TrainingDiverged, train_modadd, train_tms

P = 11
HIDDEN = 64


def _quiet(_: str) -> None:
    pass


def _modadd_setup(seed: int) -> tuple[ModMLP, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Small (p=11) modular-addition problem; one generator draws the init, then the split."""
    g = torch.Generator().manual_seed(seed)
    model = ModMLP(P, HIDDEN, g)
    train_idx, test_idx = modadd_split(P, 0.7, g)
    return model, modadd_inputs(P), modadd_labels(P), train_idx, test_idx


def _train(seed: int = 0, epochs: int = 20, **kw) -> tuple[ModMLP, pd.DataFrame]:
    model, x, y, tr, te = _modadd_setup(seed)
    args = dict(
        epochs=epochs, lr=0.05, weight_decay=0.01, checkpoint_epochs=[], save_checkpoint=lambda e, s: None, log=_quiet
    )
    args.update(kw)
    return model, train_modadd(model, x, y, tr, te, **args)


def test_tms_loss_decreases_and_curve_length():
    g = torch.Generator().manual_seed(0)
    x = tms_data(100, 20, 0.7, g)
    model = TMS(20, 5, g)
    lines: list[str] = []
    losses = train_tms(model, x, tms_importance(20, 0.8), steps=200, lr=1e-2, log_every=50, log=lines.append)
    assert len(losses) == 200
    assert losses[-1] < 0.5 * losses[0]
    assert len(lines) == 4 and "step 200" in lines[-1]


def test_tms_divergence_names_step():
    class NaNAfter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x * self.w * (float("nan") if self.calls == 3 else 1.0)

    with pytest.raises(TrainingDiverged, match=r"step 3.*nan.*lower"):
        train_tms(NaNAfter(), torch.rand(8, 4), torch.ones(4), steps=10, lr=1e-3, log=_quiet)


def test_represented_features_counts_diagonal():
    W = torch.zeros(3, 5)
    W[0, 0], W[1, 1], W[2, 2] = 1.0, 0.9, 0.5  # diag(WᵀW) = 1, 0.81, 0.25, 0, 0
    W[0, 3], W[1, 3] = 0.6, 0.6  # 0.72: just below 0.75
    assert represented_features(W.numpy()) == 2
    assert represented_features(W.numpy(), threshold=0.2) == 4


def test_modadd_history_and_loss_decrease():
    _, hist = _train(epochs=30)
    assert list(hist.columns) == HISTORY_COLUMNS
    assert hist["epoch"].tolist() == list(range(31))
    assert hist["train_loss"].iloc[-1] < 0.8 * hist["train_loss"].iloc[0]
    assert hist["train_acc"].iloc[-1] > hist["train_acc"].iloc[0]
    assert hist[["train_acc", "test_acc"]].stack().between(0, 1).all()


def test_modadd_epoch0_row_is_initial_model():
    model, x, y, tr, te = _modadd_setup(0)
    with torch.no_grad():
        out = model(x)
    target = nn.functional.one_hot(y, P).float()
    expected_loss = ((out[te] - target[te]) ** 2).mean().item()
    expected_acc = (out[te].argmax(1) == y[te]).float().mean().item()
    _, hist = _train(epochs=3)
    assert hist.loc[0, "test_loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert hist.loc[0, "test_acc"] == pytest.approx(expected_acc)


def test_checkpoints_saved_exactly_at_requested_epochs():
    saved: dict[int, dict] = {}
    initial = {k: v.clone() for k, v in _modadd_setup(0)[0].state_dict().items()}
    _train(epochs=12, checkpoint_epochs=[0, 5, 12], save_checkpoint=lambda e, s: saved.__setitem__(e, s))
    assert sorted(saved) == [0, 5, 12]
    for e, state in saved.items():
        assert state["epoch"] == e
        assert {"model", "optimizer", "epoch", "history"} <= state.keys()
        assert [r["epoch"] for r in state["history"]] == list(range(e + 1))
    # The saved weights are copies: later steps must not have changed the epoch-0 snapshot.
    for k, v in initial.items():
        assert torch.equal(saved[0]["model"][k], v)


def test_resume_is_bit_identical(tmp_path):
    def to_disk(epoch: int, state: dict) -> None:
        torch.save(state, tmp_path / f"ckpt_{epoch}.pt")

    full_model, full_hist = _train(epochs=20, checkpoint_epochs=[0, 7, 20], save_checkpoint=to_disk)
    state = torch.load(tmp_path / "ckpt_7.pt", weights_only=True)
    (tmp_path / "ckpt_20.pt").unlink()

    # A differently initialised model proves the weights come from the checkpoint.
    _, x, y, tr, te = _modadd_setup(0)
    model = ModMLP(P, HIDDEN, torch.Generator().manual_seed(123))
    hist = train_modadd(
        model,
        x,
        y,
        tr,
        te,
        epochs=20,
        lr=0.05,
        weight_decay=0.01,
        checkpoint_epochs=[0, 7, 20],
        save_checkpoint=to_disk,
        resume=state,
        log=_quiet,
    )
    for k, v in full_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    pd.testing.assert_frame_equal(hist, full_hist, check_exact=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_0.pt", "ckpt_20.pt", "ckpt_7.pt"]


def test_resume_rejects_changed_hyperparameters():
    saved: dict[int, dict] = {}
    _train(epochs=4, checkpoint_epochs=[2], save_checkpoint=lambda e, s: saved.__setitem__(e, s))
    with pytest.raises(ValueError, match="lr"):
        _train(epochs=4, lr=0.01, resume=saved[2])


def test_determinism_same_seed_same_history():
    m1, h1 = _train(seed=3, epochs=15)
    m2, h2 = _train(seed=3, epochs=15)
    pd.testing.assert_frame_equal(h1, h2, check_exact=True)
    for k, v in m1.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v)
    _, h3 = _train(seed=4, epochs=15)
    assert not h1.equals(h3)


def test_huge_lr_raises_with_epoch():
    with pytest.raises(TrainingDiverged, match=r"epoch \d+: loss = (inf|nan).*lower learning rate") as info:
        _train(epochs=50, lr=1e6)
    assert "learning rate 1e+06" in str(info.value)


def test_nan_model_raises_at_that_epoch():
    class NaNAt(ModMLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            self.calls = getattr(self, "calls", 0) + 1
            # Call k (1-based) computes the row for epoch k-1.
            return out * float("nan") if self.calls == 5 else out

    _, x, y, tr, te = _modadd_setup(0)
    model = NaNAt(P, HIDDEN, torch.Generator().manual_seed(0))
    with pytest.raises(TrainingDiverged, match=r"epoch 4\b"):
        train_modadd(
            model,
            x,
            y,
            tr,
            te,
            epochs=10,
            lr=0.05,
            weight_decay=0.01,
            checkpoint_epochs=[],
            save_checkpoint=lambda e, s: None,
            log=_quiet,
        )


def test_bad_checkpoint_epochs_rejected():
    with pytest.raises(ValueError, match="sorted"):
        _train(epochs=5, checkpoint_epochs=[3, 1])
    with pytest.raises(ValueError, match="sorted"):
        _train(epochs=5, checkpoint_epochs=[6])
