"""The Transformer kind (paper §3): model, training, eNTK on token inputs, key frequencies, claims."""

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev
from torch.utils.data import DataLoader, TensorDataset

import entk
from entk.analyses import transformer_analysis as ta
from entk.kinds import modadd_transformer as mt
from entk.kinds import transformer as tf
from entk.kinds.registry import KINDS
from entk.kinds.training import HISTORY_COLUMNS

SMALL = {"p": 7, "d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 12}


def _quiet(_msg: str) -> None:
    pass


def _brute_jacobian(model: nn.Module, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Per-sample Jacobians (C, N, P) by one jacrev per sample, float64."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    rows = []
    for n in range(x.shape[0]):

        def f(sel, xn=x[n : n + 1]):
            return functional_call(model, {**params, **sel}, (xn,))[0]

        jac = jacrev(f)({k: params[k] for k in names})
        rows.append(torch.cat([jac[k].flatten(1) for k in names], dim=1))
    return torch.stack(rows, dim=1)


def _brute_kernel(jac: torch.Tensor, outputs: str) -> torch.Tensor:
    """The reduced kernel from Jacobians (C, N, P) by the full (C, N, C, N) contraction."""
    c, n, _ = jac.shape
    k4 = torch.einsum("cnp,dmp->cndm", jac, jac)
    if outputs == "flatten":
        return k4.reshape(c * n, c * n)
    if outputs == "diag_mean":
        return torch.einsum("cncm->nm", k4) / c
    return k4.sum(dim=(0, 2)) / c**2


def _reference_forward(model: tf.Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """The paper's forward written out in full: every position, causal mask, logits at the last one."""
    n, t = tokens.shape
    x = model.W_E[tokens] + model.W_pos[:t]
    q = torch.einsum("hjm,ntm->nhtj", model.W_Q, x)
    k = torch.einsum("hjm,ntm->nhtj", model.W_K, x)
    v = torch.einsum("hjm,ntm->nhtj", model.W_V, x)
    scores = q @ k.transpose(2, 3) / math.sqrt(model.d_head)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    attn = scores.masked_fill(mask, -torch.inf).softmax(-1)
    z = (attn @ v).transpose(1, 2).reshape(n, t, -1)
    x = x + torch.einsum("mn,btn->btm", model.W_O, z)  # the notebook's W_O: z·W_Oᵀ
    x = x + torch.relu(x @ model.W_in) @ model.W_out
    return (x @ model.W_U)[:, -1]


def test_model_shapes_scales_and_forward():
    model = mt.build({}, torch.Generator().manual_seed(0))
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "W_E": (30, 64),
        "W_pos": (3, 64),
        "W_Q": (4, 16, 64),
        "W_K": (4, 16, 64),
        "W_V": (4, 16, 64),
        "W_O": (64, 64),
        "W_in": (64, 256),
        "W_out": (256, 64),
        "W_U": (64, 30),
    }
    # Init scales: std 1/√64 except W_in 1/√256 and W_U 1/√30 (paper §3).
    want = {"W_in": 1 / 16, "W_U": 1 / math.sqrt(30)}
    for name, p in model.named_parameters():
        assert p.std().item() == pytest.approx(want.get(name, 1 / 8), rel=0.25), name
    x = mt.inputs({}, 0, "k")
    assert x.dtype == torch.int64 and x.shape == (841, 3)
    assert x[30].tolist() == [1, 1, 29]  # row a·p + b
    assert tf.labels(29)[30].item() == 2
    torch.testing.assert_close(model(x), _reference_forward(model, x))


KIND = KINDS["modadd_transformer"]


def _check(settings: dict) -> list[str]:
    return KIND.check(KIND.with_defaults(settings))


def test_check_names_the_key_and_fix():
    assert _check({}) == []
    msgs = _check({"d_model": 60})
    assert len(msgs) == 1 and "d_model" in msgs[0] and "n_heads·d_head" in msgs[0]
    assert any("train_fraction" in m for m in _check({"train_fraction": 1.5}))
    with pytest.raises(ValueError, match="'bogus'"):
        mt.train({"bogus": 1}, 0, "k", log=_quiet)
    assert KIND.checkpoint_steps(KIND.with_defaults({"epochs": 50, "log_every": 20})) == [0, 20, 40, 50]


@pytest.mark.parametrize("outputs", ["flatten", "diag_mean", "all_mean"])
def test_per_tensor_kernels_match_brute_force(outputs):
    torch.manual_seed(0)
    model = mt.build(SMALL, torch.Generator().manual_seed(1)).double()
    x = mt.inputs(SMALL)[::3]  # 17 of the 49 sequences, int64
    kernels = entk.layer_ntks(model, x, {name: [name] for name in tf.TENSORS}, outputs=outputs)
    for name in tf.TENSORS:
        want = _brute_kernel(_brute_jacobian(model, x, [name]), outputs)
        torch.testing.assert_close(kernels[name].dense(), want, rtol=1e-9, atol=1e-12, msg=name)
    full = entk.compact_ntk(model, x, outputs=outputs).dense()
    torch.testing.assert_close(full, _brute_kernel(_brute_jacobian(model, x, list(tf.TENSORS)), outputs))


class _TokenNet(nn.Module):
    """Embedding → Linear on (N, T, d) → tanh → Linear on the flattened positions: (N, T) → (N, C)."""

    def __init__(self, vocab=6, t=3, d=5, h=4, c=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, h)
        self.out = nn.Linear(t * h, c)

    def forward(self, tokens):
        return self.out(torch.tanh(self.mix(self.emb(tokens))).flatten(1))


@pytest.mark.parametrize("outputs", ["flatten", "diag_mean", "all_mean"])
def test_structured_token_path_matches_brute_force(outputs):
    torch.manual_seed(0)
    model = _TokenNet().double()
    x = torch.randint(0, 6, (11, 3))
    for name, module in (("emb", model.emb), ("mix", model.mix), ("out", model.out)):
        got = entk.compact_ntk(model, x, params=[name], outputs=outputs).dense()
        names = [f"{name}.{p}" for p, _ in module.named_parameters()]
        torch.testing.assert_close(got, _brute_kernel(_brute_jacobian(model, x, names), outputs), msg=name)


TINY = {**SMALL, "epochs": 6, "log_every": 2, "batch_size": 8}


def test_train_history_and_bit_identical_resume(tmp_path):
    def to_disk(epoch, state):
        torch.save(state, tmp_path / f"ckpt_{epoch}.pt")

    steps = KIND.checkpoint_steps(KIND.with_defaults(TINY))
    assert steps == [0, 2, 4, 6]
    full = mt.train(TINY, 0, "transformer", checkpoint_steps=steps, save_checkpoint=to_disk, log=_quiet)
    assert list(full.columns) == HISTORY_COLUMNS and full["epoch"].tolist() == steps
    final = torch.load(tmp_path / "ckpt_6.pt", weights_only=True)
    state = torch.load(tmp_path / "ckpt_2.pt", weights_only=True)
    (tmp_path / "ckpt_6.pt").unlink()
    resumed = mt.train(
        TINY, 0, "transformer", checkpoint_steps=steps, save_checkpoint=to_disk, resume=state, log=_quiet
    )
    pd.testing.assert_frame_equal(resumed, full, check_exact=True)
    again = torch.load(tmp_path / "ckpt_6.pt", weights_only=True)
    for name, value in final["model"].items():
        assert torch.equal(again["model"][name], value), name
    # Another key draws another run; the train loss fell.
    other = mt.train(TINY, 0, "other", log=_quiet)
    assert not other.equals(full)
    assert full["train_loss"].iloc[-1] < full["train_loss"].iloc[0]


def test_resume_rejects_changed_settings():
    saved = {}
    mt.train(TINY, 0, "t", checkpoint_steps=[2], save_checkpoint=saved.__setitem__, log=_quiet)
    with pytest.raises(ValueError, match="lr"):
        mt.train({**TINY, "lr": 1e-3}, 0, "t", resume=saved[2], log=_quiet)
    with pytest.raises(ValueError, match="log_every"):
        mt.train(TINY, 0, "t", checkpoint_steps=[3], log=_quiet)


def test_author_split_is_the_notebooks():
    p = 29
    pairs = [(i, j, p) for i in range(p) for j in range(p)]
    state = random.getstate()
    try:
        random.seed(0)
        random.shuffle(pairs)
    finally:
        random.setstate(state)
    train, test = tf.author_split(p, 0.5)
    assert pairs[:3] == [(18, 8, p), (12, 16, p), (19, 7, p)]  # as the issue read them off the notebook
    assert len(train) == int(0.5 * p * p) == 420 and len(test) == p * p - 420
    assert train.tolist() == [i * p + j for i, j, _ in pairs[:420]]
    assert test.tolist() == [i * p + j for i, j, _ in pairs[420:]]
    assert tf.author_split(p, 0.5)[0].tolist() == train.tolist()  # seed 0 whatever the run's seed


class _NotebookTransformer(nn.Module):
    """The author's notebook model, re-written from its cells: parameters drawn from torch's global
    stream in the order embed, pos_embed, attention (Q, K, V, O), MLP (in, out), unembed; every
    position computed with einsums and a causal mask; W_O applied as einsum('m n, b s n -> b s m')."""

    def __init__(self, vocab, d_model, n_heads, d_mlp):
        super().__init__()
        d_head = d_model // n_heads
        self.d_head = d_head

        def draw(*shape, scale):
            return nn.Parameter(torch.randn(*shape) / np.sqrt(scale))

        self.W_E = draw(vocab, d_model, scale=d_model)
        self.W_pos = draw(3, d_model, scale=d_model)
        self.W_Q = draw(n_heads, d_head, d_model, scale=d_model)
        self.W_K = draw(n_heads, d_head, d_model, scale=d_model)
        self.W_V = draw(n_heads, d_head, d_model, scale=d_model)
        self.W_O = draw(d_model, d_model, scale=d_model)
        self.W_in = draw(d_model, d_mlp, scale=d_mlp)
        self.W_out = draw(d_mlp, d_model, scale=d_model)
        self.W_U = draw(d_model, vocab, scale=vocab)

    def forward(self, tokens):
        x = self.W_E[tokens] + self.W_pos.unsqueeze(0)
        q = torch.einsum("nhm,bsm->bsnh", self.W_Q, x)
        k = torch.einsum("nhm,bsm->bsnh", self.W_K, x)
        v = torch.einsum("nhm,bsm->bsnh", self.W_V, x)
        attn = torch.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(self.d_head)
        attn = attn.masked_fill(torch.ones(3, 3).triu(1).bool(), float("-inf")).softmax(-1)
        z = torch.einsum("bnqk,bknh->bqnh", attn, v).flatten(2)
        x = x + torch.einsum("mn,bsn->bsm", self.W_O, z)
        x = x + torch.relu(x @ self.W_in) @ self.W_out
        return (x @ self.W_U)[:, 2, :]


def _notebook_run(s: dict, seed: int) -> dict[str, torch.Tensor]:
    """The notebook's training cells on settings ``s``: torch.manual_seed(seed), the model, the
    random.seed(0) split, DataLoaders, and per epoch one pass of the shuffled train loader, then at
    epochs 0, log_every, … the evaluation passes over the test and train loaders. Final parameters."""
    p = s["p"]
    pairs = [(i, j, p) for i in range(p) for j in range(p)]
    random.Random(0).shuffle(pairs)
    n = int(s["train_fraction"] * len(pairs))
    data = torch.tensor(pairs)
    labels = (data[:, 0] + data[:, 1]) % p
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _NotebookTransformer(p + 1, s["d_model"], s["n_heads"], s["d_mlp"])
        opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
        train = DataLoader(TensorDataset(data[:n], labels[:n]), batch_size=s["batch_size"], shuffle=True)
        test = DataLoader(TensorDataset(data[n:], labels[n:]), batch_size=s["batch_size"], shuffle=False)
        for epoch in range(s["epochs"]):
            for x, y in train:
                opt.zero_grad()
                F.cross_entropy(model(x)[:, :p], y).backward()
                opt.step()
            if epoch % s["log_every"] == 0:
                for loader in (test, train):
                    for _ in loader:
                        pass
    return {k: v.detach() for k, v in model.named_parameters()}


def test_author_rng_replays_the_notebooks_weights_split_and_batches():
    s = {**SMALL, "train_fraction": 0.5, "epochs": 5, "log_every": 2, "batch_size": 8, "lr": 1e-2, "weight_decay": 1.0}
    s["rng"] = "author"
    with torch.random.fork_rng():
        torch.manual_seed(2)
        drawn = _NotebookTransformer(s["p"] + 1, s["d_model"], s["n_heads"], s["d_mlp"])
    initial = {}
    mt.train({**s, "epochs": 1}, 2, "ignored", checkpoint_steps=[0], save_checkpoint=initial.__setitem__, log=_quiet)
    for name, value in drawn.named_parameters():
        assert torch.equal(initial[0]["model"][name], value.detach()), name  # bit for bit
    before = torch.get_rng_state()
    final = {}
    history = mt.train(s, 2, "ignored", checkpoint_steps=[5], save_checkpoint=final.__setitem__, log=_quiet)
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is left as it was
    want = _notebook_run(s, 2)
    for name, value in want.items():
        torch.testing.assert_close(final[5]["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    # The notebook's batches, not another order: a run with other draws ends elsewhere.
    other = {}
    mt.train({**s, "rng": "entk"}, 2, "k", checkpoint_steps=[5], save_checkpoint=other.__setitem__, log=_quiet)
    assert not torch.allclose(other[5]["model"]["W_U"], want["W_U"], atol=1e-3)
    assert history["epoch"].tolist() == [0, 2, 4, 5]


def test_author_rng_draws_the_published_runs_initial_weights_at_p29():
    """At the published run's sizes and seed (p = 29, d_model 64, 4 heads, d_mlp 256, seed 2), the
    replay's initial weights are the notebook model's drawn after torch.manual_seed(2), bit for bit."""
    s = {"p": 29, "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 256, "train_fraction": 0.5}
    s |= {"epochs": 1, "log_every": 1, "batch_size": 64, "lr": 3e-4, "weight_decay": 1.0, "rng": "author"}
    with torch.random.fork_rng():
        torch.manual_seed(2)
        drawn = _NotebookTransformer(30, 64, 4, 256)
    initial = {}
    mt.train(s, 2, "ignored", checkpoint_steps=[0], save_checkpoint=initial.__setitem__, log=_quiet)
    assert initial[0]["model"].keys() == dict(drawn.named_parameters()).keys()
    for name, value in drawn.named_parameters():
        assert torch.equal(initial[0]["model"][name], value.detach()), name


def test_rng_setting_is_checked():
    assert _check({"rng": "author"}) == []
    msgs = _check({"rng": "numpy"})
    assert len(msgs) == 1 and "'rng'" in msgs[0] and "entk" in msgs[0] and "author" in msgs[0]


P = 29
KEYS = [3, 11]


def _planted_model() -> tf.Transformer:
    """Number-token embeddings made of frequencies KEYS only; uniform attention (W_Q = 0) and no MLP, so the
    last residual is a constant plus a linear map of W_E[a] + W_E[b]: rank 1 + 4 with Fourier modes."""
    gen = torch.Generator().manual_seed(5)
    model = mt.build({"p": P, "d_model": 8, "n_heads": 2, "d_head": 4, "d_mlp": 4}, gen).double()
    t = torch.arange(P, dtype=torch.float64)[:, None]
    waves = torch.cat(
        [torch.cos(2 * math.pi * k * t / P + 0.3 * k) for k in KEYS]
        + [torch.sin(2 * math.pi * k * t / P + 0.7) for k in KEYS],
        dim=1,
    )  # (P, 4)
    with torch.no_grad():
        model.W_E[:P] = waves @ torch.randn(4, 8, generator=gen, dtype=torch.float64)
        model.W_E[:P] += 1e-3 * torch.randn(P, 8, generator=gen, dtype=torch.float64)
        model.W_in.zero_()
        model.W_Q.zero_()
    return model


def test_key_frequencies_found_on_a_planted_model():
    model = _planted_model()
    power = ta.embedding_power(model.W_E.detach().numpy(), P)
    assert sorted(np.argsort(power)[-2:] + 1) == KEYS
    assert ta.key_frequencies_embedding(model.W_E.detach().numpy(), P) == KEYS
    kernel = entk.compact_ntk(model, mt.inputs({"p": P}), params=["W_U"], outputs="all_mean")
    _, vectors = entk.kernel_eigenpairs(kernel, 5)
    assert ta.key_frequencies_ntk(vectors.numpy(), P) == KEYS


def test_embedding_power_matches_the_dft_sum():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(P + 1, 5))
    t = np.arange(P)
    for k in (1, 7, 14):
        c = np.cos(2 * np.pi * k * t / P) @ w[:P]
        s = np.sin(2 * np.pi * k * t / P) @ w[:P]
        # |X_k|² = c² + s² per column; frequencies k and p − k are folded (× 2), then the mean over columns.
        assert ta.embedding_power(w, P)[k - 1] == pytest.approx(2 * np.mean(c**2 + s**2))


def test_key_families_are_orthonormal_and_what_they_say():
    fam = ta.key_families(P, KEYS)
    a, b = np.divmod(np.arange(P * P), P)
    for f in fam.values():
        assert f.shape == (P * P, 4)
        np.testing.assert_allclose(f.T @ f, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(f.sum(axis=0), 0, atol=1e-10)
    x = np.cos(2 * np.pi * 11 * (a + b) / P)
    # cos(11(a+b)) lies in the sum family and nowhere in the a, b or axis families.
    for name, want in (("sum", 1.0), ("diff", 0.0), ("a", 0.0), ("axis_sum", 0.0)):
        assert np.sum((fam[name].T @ x) ** 2) / (x @ x) == pytest.approx(want, abs=1e-12), name
    y = np.sin(2 * np.pi * 3 * a / P) - np.sin(2 * np.pi * 3 * b / P)
    assert np.sum((fam["axis_diff"].T @ y) ** 2) / (y @ y) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="keys"):
        ta.key_families(P, [0, 3])


def _planted_eigen(seed=0):
    """Eigenvectors (p², 12): one constant mode, the sum family, the axis-sum family, then noise."""
    fam = ta.key_families(P, KEYS)
    rng = np.random.default_rng(seed)
    cols = np.hstack([np.ones((P * P, 1)), fam["sum"], fam["axis_sum"], rng.normal(size=(P * P, 3))])
    q, _ = np.linalg.qr(cols)
    return np.linspace(1, 0.1, 12), q, fam


def test_layer_table_and_unembed_claims_on_planted_eigenvectors():
    values, vectors, fam = _planted_eigen()
    groups = ta.default_groups(2, 12)
    assert groups == [(0, 5), (5, 9)]
    table = ta.layer_table({"W_U": (values, vectors)}, fam, groups)
    assert list(table.columns) == ["tensor", "group", "family", "overlap", "of"]
    got = table.set_index(["group", "family"])["overlap"]
    assert got["1–5", "sum"] == pytest.approx(4.0)
    assert got["6–9", "axis_sum"] == pytest.approx(4.0)
    assert got["1–5", "axis_sum"] == pytest.approx(0.0, abs=1e-10)
    assert (table["of"] == 4).all()
    rows = ta.unembed_claims(vectors, fam, 2, ta.BANDS)
    assert [r["pass"] for r in rows] == [True, True]
    # Swapping the two groups must fail both.
    swapped = vectors[:, [0, 5, 6, 7, 8, 1, 2, 3, 4, 9, 10, 11]]
    assert [r["pass"] for r in ta.unembed_claims(swapped, fam, 2, ta.BANDS)] == [False, False]


def test_grokking_diagnostic_peak_and_claims():
    _, vectors, fam = _planted_eigen()
    epochs = np.arange(0, 220, 20)
    rng = np.random.default_rng(1)
    noise = np.linalg.qr(rng.normal(size=(P * P, 5)))[0]
    # Eigenvectors turn from noise to the sum family between epochs 80 and 120, fastest at 100.
    mix = np.clip((epochs - 80) / 40, 0, 1)
    stack = np.stack([np.linalg.qr((1 - m) * noise + m * vectors[:, :5])[0] for m in mix])
    history = pd.DataFrame({"epoch": epochs, "test_acc": np.where(epochs >= 120, 0.99, 0.1)})
    curve, peak, grok = ta.grokking_diagnostic(epochs, stack, history, fam["sum"], threshold=0.9)
    assert curve["overlap"].iloc[-1] == pytest.approx(4.0) and curve["overlap"].iloc[0] < 0.1
    assert 80 <= peak <= 120 and grok == 120
    assert ta.grokking_claims(peak, grok, 0.9, 5, ta.BANDS)[0]["pass"]
    assert not ta.grokking_claims(peak, None, 0.9, 5, ta.BANDS)[0]["pass"]
    assert not ta.key_frequency_claims([1, 12], [1, 11])[0]["pass"]
    hist = pd.DataFrame({"epoch": [0, 1000, 2000, 2020], "test_acc": [0.0, 0.5, 0.94, 1.0]})
    assert not ta.accuracy_claims(hist, ta.BANDS)[0]["pass"]


def test_figures_draw_one_panel_per_group_and_mark_the_epochs():
    from entk.figures.transformer_plots import fig_transformer, fig_transformer_layers

    values, vectors, fam = _planted_eigen()
    table = ta.layer_table({"W_U": (values, vectors), "W_E": (values, vectors[:, ::-1])}, fam, ta.default_groups(2, 12))
    fig = fig_transformer_layers(table, KEYS)
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2
    # Row 0 is W_U: its 1–5 block holds the whole sum family (share 1), its axis-sum share is 0.
    shares = heatmaps[0].images[0].get_array()
    assert shares[0, list(fam).index("sum")] == pytest.approx(1.0)
    assert shares[0, list(fam).index("axis_sum")] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="empty"):
        fig_transformer_layers(table.iloc[:0])
    history = pd.DataFrame({"epoch": [0, 20, 40], "train_acc": [0.1, 1.0, 1.0], "test_acc": [0.0, 0.2, 0.9]})
    curve = pd.DataFrame({"epoch": [0, 20, 40], "overlap": [0.0, 2.0, 4.0], "of": 4, "d_overlap": [0.1, 0.1, 0.1]})
    fig = fig_transformer(history, curve, peak=20, grok=40, threshold=0.5)
    marked = {round(line.get_xdata()[0]) for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() != "-"}
    assert {20, 40} <= marked
