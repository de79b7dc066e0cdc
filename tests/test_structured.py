"""``entk.NTK`` (structured and generic Jacobian paths) against brute-force kernels, float64.

The reference is computed here, independently of entk: per-sample Jacobians by ``torch.func.jacrev``
(vmapped over samples) over ``functional_call``, flattened per parameter, then contracted in full
and reduced to each output mode (docs/spec.md, "Notation"):

    K[(c, n), (d, m)] = w_c w_d ∂f_c(x_n)/∂θ · ∂f_d(x_m)/∂θ
    flatten   : (C·N, C·N), row c·N + n
    diag_mean : (1/C) Σ_c K_cc              (N, N)
    all_mean  : (1/C²) Σ_{c,d} K_cd         (N, N)

Every model here is float64 by construction (explicit dtypes; the global default is left alone).
The models cover what the structured path has to recognise — a parameter entering through
``F.linear``, ``@``/``matmul`` on either side and through views, ``torch.einsum``, embedding lookups,
convolutions and bias additions, used once or several times (cross terms) — and what it has to
hand to the generic path (a parameter entering nonlinearly).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

import entk
from entk.kinds import transformer
from entk.kinds.models import TMS

DT = torch.float64
TOL = 1e-10  # relative max error against the brute-force kernel
OUTPUTS = ("flatten", "diag_mean", "all_mean")


# --- Brute force ---


def brute_jacobians(model: nn.Module, x: Tensor, names: list[str] | None = None) -> dict[str, Tensor]:
    """Per-sample Jacobians {parameter name: (C, N, numel)}: J[c, n] = ∂f_c(x_n)/∂θ, flattened.

    One ``jacrev`` of the model run on a single sample (a batch of one), vmapped over the samples.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params) if names is None else names

    def one_sample(selected: dict[str, Tensor], xn: Tensor) -> Tensor:
        return functional_call(model, {**params, **selected}, (xn.unsqueeze(0),))[0]

    jac = vmap(jacrev(one_sample), in_dims=(None, 0))({k: params[k] for k in names}, x)  # {k: (N, C, *shape)}
    return {k: jac[k].flatten(2).transpose(0, 1) for k in names}


def brute_kernel(
    jac: dict[str, Tensor], outputs: str = "flatten", weights: Tensor | None = None, names: list[str] | None = None
) -> Tensor:
    """The dense kernel of the parameters ``names`` (default all in ``jac``) by explicit contraction."""
    j = torch.cat([jac[k] for k in (names or list(jac))], dim=2)  # (C, N, P)
    if weights is not None:
        j = j * weights[:, None, None]
    c, n, _ = j.shape
    k4 = torch.einsum("cnp,dmp->cndm", j, j)  # K[(c, n), (d, m)]
    if outputs == "flatten":
        return k4.reshape(c * n, c * n)
    if outputs == "diag_mean":
        return torch.einsum("cncm->nm", k4) / c
    if outputs == "all_mean":
        return k4.sum(dim=(0, 2)) / c**2
    raise ValueError(f"unknown output mode {outputs!r}")


def output_weights(c: int) -> Tensor:
    """Distinct nonzero weights of both signs, one per output."""
    return (0.5 + torch.arange(c, dtype=DT) / c) * (-1.0) ** torch.arange(c)


def dense(kernel) -> Tensor:
    """A returned ``entk.Kernel`` as a dense matrix (checked to be one)."""
    assert isinstance(kernel, entk.Kernel), f"expected an entk.Kernel, got {type(kernel).__name__}"
    return kernel.dense()


def assert_close(got: Tensor, want: Tensor, what: str = "kernel", tol: float = TOL) -> None:
    """max |got − want| ≤ tol · max |want|, shapes equal, float64."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)}, want {tuple(want.shape)}"
    assert got.dtype == DT, f"{what}: dtype {got.dtype}, want {DT}"
    scale = want.abs().max()
    assert scale > 0, f"{what}: the brute-force reference is zero, the test would prove nothing"
    err = ((got - want).abs().max() / scale).item()
    assert err <= tol, f"{what}: relative max error {err:.3g} > {tol:g}"


def _init(model: nn.Module, seed: int) -> nn.Module:
    """float64, every parameter redrawn from one seeded generator: N(0, 1/fan_in) weights, N(0, 1/4) vectors."""
    gen = torch.Generator().manual_seed(seed)
    model = model.to(DT)
    with torch.no_grad():
        for p in model.parameters():
            std = 0.5 if p.ndim == 1 else p[0].numel() ** -0.5
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DT) * std)
    return model


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape, dtype=DT))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- Models ---


class UntiedTMS(nn.Module):
    """TMS with its two uses of W given separate copies: relu(x W1ᵀ W2 + b) (for the cross-term check)."""

    def __init__(self, tms: nn.Module):
        super().__init__()
        self.W1 = nn.Parameter(tms.W.detach().clone())
        self.W2 = nn.Parameter(tms.W.detach().clone())
        self.b = nn.Parameter(tms.b.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.W1.T @ self.W2 + self.b)


class TiedEmbedding(nn.Module):
    """Tokens (N, T) → embedding table E (V, d) → mean over positions → tanh(Linear) → logits h Eᵀ (N, V).

    ``lookup``: "module" (nn.Embedding), "index" (E[tokens]) or "functional" (F.embedding);
    ``readout``: "linear" (F.linear(h, E)) or "matmul" (h @ E.T). ``tied=False`` reads out through a
    separate copy ``U`` instead (same values), for the cross-term check.
    """

    def __init__(self, vocab: int = 7, d: int = 5, lookup: str = "module", readout: str = "linear", tied: bool = True):
        super().__init__()
        self.lookup, self.readout = lookup, readout
        if lookup == "module":
            self.emb = nn.Embedding(vocab, d, dtype=DT)
        else:
            self.E = _param(vocab, d)
        self.fc = nn.Linear(d, d, dtype=DT)
        self.U = None if tied else _param(vocab, d)

    def table(self) -> Tensor:
        return self.emb.weight if self.lookup == "module" else self.E

    def forward(self, tokens: Tensor) -> Tensor:
        table = self.table()
        if self.lookup == "module":
            e = self.emb(tokens)
        elif self.lookup == "index":
            e = table[tokens]
        else:
            e = F.embedding(tokens, table)
        h = torch.tanh(self.fc(e.mean(dim=1)))
        out = table if self.U is None else self.U
        return F.linear(h, out) if self.readout == "linear" else h @ out.T

    def untied(self) -> TiedEmbedding:
        """A copy whose readout uses its own parameter U, equal to the table."""
        d_vocab, d = self.table().shape
        copy = TiedEmbedding(d_vocab, d, self.lookup, self.readout, tied=False)
        copy.load_state_dict(self.state_dict(), strict=False)
        with torch.no_grad():
            copy.U.copy_(self.table())
        return copy


class SharedBlock(nn.Module):
    """The same nn.Linear(d, d) applied twice with a tanh between, then a readout (``tied=False``: two copies)."""

    def __init__(self, d: int = 5, c: int = 3, tied: bool = True):
        super().__init__()
        self.block = nn.Linear(d, d, dtype=DT)
        self.again = None if tied else nn.Linear(d, d, dtype=DT)
        self.head = nn.Linear(d, c, dtype=DT)

    def forward(self, x: Tensor) -> Tensor:
        second = self.block if self.again is None else self.again
        return self.head(torch.tanh(second(torch.tanh(self.block(x)))))

    def untied(self) -> SharedBlock:
        copy = SharedBlock(self.block.in_features, self.head.out_features, tied=False)
        copy.load_state_dict(self.state_dict(), strict=False)
        copy.again.load_state_dict(self.block.state_dict())
        return copy


class EinsumAttention(nn.Module):
    """Hand-written attention, weights (heads, d_head, d_model) used through einsum("ntd,hkd->nthk", x, W)."""

    def __init__(self, d: int = 6, heads: int = 2, d_head: int = 3, c: int = 4):
        super().__init__()
        self.W_Q, self.W_K, self.W_V = (_param(heads, d_head, d) for _ in range(3))
        self.W_O = _param(heads, d_head, c)

    def forward(self, x: Tensor) -> Tensor:  # x (N, T, d)
        q = torch.einsum("ntd,hkd->nthk", x, self.W_Q)
        k = torch.einsum("ntd,hkd->nthk", x, self.W_K)
        v = torch.einsum("ntd,hkd->nthk", x, self.W_V)
        scores = torch.einsum("nthk,nshk->nhts", q, k) / math.sqrt(q.shape[-1])
        z = torch.einsum("nhts,nshk->nthk", torch.softmax(scores, dim=-1), v)
        return torch.einsum("nthk,hkc->nc", z, self.W_O)


class LeftOperand(nn.Module):
    """Parameters as the left operand: tanh((W1 @ xᵀ)ᵀ), then torch.matmul(W2, h.unsqueeze(-1))."""

    def __init__(self, d: int = 5, h: int = 6, c: int = 3):
        super().__init__()
        self.W1, self.W2 = _param(h, d), _param(c, h)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh((self.W1 @ x.T).T)
        return torch.matmul(self.W2, h.unsqueeze(-1)).squeeze(-1)


class Views(nn.Module):
    """One (2, 4, d) weight A used three times through views (.reshape + .t(), .view + slice + .transpose,
    .flatten + strided slice + .T); a readout B and a bias b entering only through slices."""

    def __init__(self, d: int = 5, c: int = 3):
        super().__init__()
        self.c = c
        self.A, self.B, self.b = _param(2, 4, d), _param(8, 2 * c), _param(c + 2)

    def forward(self, x: Tensor) -> Tensor:
        d, c = x.shape[-1], self.c
        h1 = torch.tanh(x @ self.A.reshape(8, d).t())  # (N, 8)
        h2 = torch.tanh(x @ self.A.view(8, d)[2:6].transpose(0, 1))  # (N, 4)
        h3 = torch.tanh(x @ self.A.flatten(0, 1)[::2].T)  # (N, 4)
        return h1 @ self.B[:, :c] + h2 @ self.B[:4, c:] + h3 @ self.B[4:, c:] + self.b[1 : c + 1]


class Functional(nn.Module):
    """Raw parameters through F.conv1d (bias, stride, padding), F.linear (bias) and einsum plus a bias."""

    def __init__(self, c_in: int = 2, c_mid: int = 3, length: int = 7, hidden: int = 6, c: int = 4):
        super().__init__()
        flat = c_mid * ((length + 2 - 3) // 2 + 1)
        self.K, self.kb = _param(c_mid, c_in, 3), _param(c_mid)
        self.W, self.wb = _param(hidden, flat), _param(hidden)
        self.U, self.ub = _param(c, hidden), _param(c)

    def forward(self, x: Tensor) -> Tensor:  # x (N, c_in, length)
        h = torch.tanh(F.conv1d(x, self.K, self.kb, stride=2, padding=1)).flatten(1)
        h = torch.tanh(F.linear(h, self.W, self.wb))
        return torch.einsum("nh,ch->nc", h, self.U) + self.ub


class MLP(nn.Module):
    """fc1 → tanh → fc2, both with biases."""

    def __init__(self, d: int = 5, h: int = 7, c: int = 3):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, h, dtype=DT), nn.Linear(h, c, dtype=DT)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class EmbeddingPool(nn.Module):
    """nn.Embedding → mean over positions → nn.Linear."""

    def __init__(self, vocab: int = 7, d: int = 5, c: int = 3):
        super().__init__()
        self.emb, self.out = nn.Embedding(vocab, d, dtype=DT), nn.Linear(d, c, dtype=DT)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.out(self.emb(tokens).mean(dim=1))


class SequenceLinear(nn.Module):
    """Inputs (N, T, d) into nn.Linear, tanh, mean over positions, nn.Linear."""

    def __init__(self, d: int = 4, h: int = 6, c: int = 3):
        super().__init__()
        self.fc, self.out = nn.Linear(d, h, dtype=DT), nn.Linear(h, c, dtype=DT)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.fc(x)).mean(dim=1))


class SinWeight(nn.Module):
    """W enters nonlinearly (x @ sin(W)ᵀ): generic; the readout is a plain nn.Linear."""

    def __init__(self, d: int = 5, h: int = 6, c: int = 3):
        super().__init__()
        self.W, self.head = _param(h, d), nn.Linear(h, c, dtype=DT)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(x @ torch.sin(self.W).T))


class SquaredScale(nn.Module):
    """An input scale entering squared (x * s²): generic; then nn.Linear → tanh → nn.Linear."""

    def __init__(self, d: int = 5, h: int = 6, c: int = 3):
        super().__init__()
        self.scale = _param(d)
        self.fc, self.head = nn.Linear(d, h, dtype=DT), nn.Linear(h, c, dtype=DT)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.fc(x * self.scale**2)))


class MixedUse(nn.Module):
    """One W used linearly and nonlinearly at once: (x @ Wᵀ) · ‖W‖, then tanh and a readout."""

    def __init__(self, d: int = 5, h: int = 6, c: int = 3):
        super().__init__()
        self.W, self.head = _param(h, d), nn.Linear(h, c, dtype=DT)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh((x @ self.W.T) * self.W.norm()))


# --- Cases: (model, x), float64, built from fixed seeds ---


def make_tms() -> tuple[nn.Module, Tensor]:
    """TMS(6, 3) with a nonzero bias; inputs chosen so that some ReLUs are on and some off (none at the kink)."""
    model = TMS(6, 3, generator=_gen(0)).to(DT)
    with torch.no_grad():
        model.W.copy_(torch.randn(3, 6, generator=_gen(1), dtype=DT) * 0.6)
        model.b.copy_(torch.randn(6, generator=_gen(2), dtype=DT) * 0.3)
    x = torch.randn(12, 6, generator=_gen(3), dtype=DT)
    pre = x @ model.W.T @ model.W + model.b
    assert (pre > 0).any() and (pre < 0).any() and pre.abs().min() > 1e-6
    return model, x


def make_transformer() -> tuple[nn.Module, Tensor]:
    """The paper's Transformer at p = 5 (d_model 8, 2 heads of 4, d_mlp 16) on 15 of the 25 sequences."""
    model = transformer.Transformer(p=5, d_model=8, n_heads=2, d_head=4, d_mlp=16, generator=_gen(0)).to(DT)
    rows = torch.randperm(25, generator=_gen(1))[:15]
    return model, transformer.sequences(5)[rows]


def _tokens(seed: int, n: int = 10, t: int = 4, vocab: int = 7) -> Tensor:
    return torch.randint(vocab, (n, t), generator=_gen(seed))


def _tied(lookup: str, readout: str) -> Callable[[], tuple[nn.Module, Tensor]]:
    return lambda: (_init(TiedEmbedding(lookup=lookup, readout=readout), 4), _tokens(5))


def _normal(*shape: int, seed: int = 6) -> Tensor:
    return torch.randn(shape, generator=_gen(seed), dtype=DT)


CASES: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = {
    "tms": make_tms,
    "transformer": make_transformer,
    "tied_embedding_linear": _tied("module", "linear"),
    "tied_index_matmul": _tied("index", "matmul"),
    "tied_functional_linear": _tied("functional", "linear"),
    "shared_block": lambda: (_init(SharedBlock(), 7), _normal(10, 5)),
    "einsum_attention": lambda: (_init(EinsumAttention(), 8), _normal(8, 4, 6)),
    "left_operand": lambda: (_init(LeftOperand(), 9), _normal(10, 5)),
    "views": lambda: (_init(Views(), 10), _normal(10, 5)),
    "functional": lambda: (_init(Functional(), 11), _normal(10, 2, 7)),
    "mlp": lambda: (_init(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), 12), _normal(10, 5)),
    "conv1d": lambda: (
        _init(nn.Sequential(nn.Conv1d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)), 13),
        _normal(10, 2, 7),
    ),
    "conv2d": lambda: (
        _init(nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3)), 14),
        _normal(8, 2, 5, 5),
    ),
    "embedding_pool": lambda: (_init(EmbeddingPool(), 15), _tokens(16)),
    "sequence_linear": lambda: (_init(SequenceLinear(), 17), _normal(10, 3, 4)),
    "sin_weight": lambda: (_init(SinWeight(), 18), _normal(10, 5)),
    "squared_scale": lambda: (_init(SquaredScale(), 19), _normal(10, 5)),
    "mixed_use": lambda: (_init(MixedUse(), 20), _normal(10, 5)),
}

# Parameters the generic path must take; every other parameter of every case must be structured.
GENERIC = {"sin_weight": {"W"}, "squared_scale": {"scale"}}
# Parameters that may take either path (a recognised and an unrecognised use of the same tensor).
EITHER = {"mixed_use": {"W"}}


@functools.cache
def _case_jacobians(case: str, default_dtype: torch.dtype) -> dict[str, Tensor]:
    # Keyed on the default dtype too: TMS and Transformer draw their initial weights in it.
    model, x = CASES[case]()
    return brute_jacobians(model, x)


def build(case: str) -> tuple[nn.Module, Tensor, dict[str, Tensor]]:
    """A fresh copy of the case's model and inputs, with the brute-force Jacobians of all its parameters
    (computed once per case: the cases are deterministic)."""
    model, x = CASES[case]()
    return model, x, _case_jacobians(case, torch.get_default_dtype())


def n_outputs(jac: dict[str, Tensor]) -> int:
    return next(iter(jac.values())).shape[0]


# --- The brute force itself ---


def test_brute_force_on_a_linear_model():
    """f(x) = x Wᵀ has J[c, n] = e_c ⊗ x_n, so K_cd = w_c² δ_cd X Xᵀ: checks the helpers' layout by hand."""
    c, d = 3, 4
    model = nn.Linear(d, c, bias=False, dtype=DT)
    x = _normal(5, d)
    w = output_weights(c)
    gram = x @ x.T
    jac = brute_jacobians(model, x)
    assert_close(brute_kernel(jac, "flatten", w), torch.kron(torch.diag(w**2), gram))
    assert_close(brute_kernel(jac, "diag_mean", w), (w**2).mean() * gram)
    assert_close(brute_kernel(jac, "all_mean", w), (w**2).sum() / c**2 * gram)


@pytest.mark.parametrize("case", ["tms", "tied_embedding_linear", "tied_index_matmul", "shared_block"])
def test_cross_terms_are_not_negligible(case):
    """The reused weight's kernel differs from the sum of its uses' kernels (an untied copy), so the
    kernel tests below fail for an implementation that drops the cross terms."""
    model, x, jac = build(case)
    if case == "tms":
        untied, uses, name = UntiedTMS(model), ["W1", "W2"], "W"
    elif case == "shared_block":
        untied, uses, name = model.untied(), ["block.weight", "again.weight"], "block.weight"
    else:
        untied = model.untied()
        name = "emb.weight" if case == "tied_embedding_linear" else "E"
        uses = [name, "U"]
    split = brute_jacobians(untied, x, uses)
    assert_close(untied(x), model(x), "untied copy's outputs")
    assert_close(split[uses[0]] + split[uses[1]], jac[name], "tied Jacobian = Σ of its uses' Jacobians")
    tied_k = brute_kernel(jac, names=[name])
    sum_of_uses = brute_kernel(split)  # Σ_i J_i J_iᵀ: the tied kernel without its cross terms J_i J_jᵀ
    assert ((sum_of_uses - tied_k).abs().max() / tied_k.abs().max()).item() > 1e-2


# --- Kernels of all selected parameters, every case, every output mode ---


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("outputs", OUTPUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_brute_force(case, outputs, weighted):
    model, x, jac = build(case)
    w = output_weights(n_outputs(jac)) if weighted else None
    ntk = entk.NTK(model, x, outputs=outputs, output_weights=w)
    want = brute_kernel(jac, outputs, w)
    assert_close(dense(ntk.kernel()), want, f"{case} {outputs}")


@pytest.mark.parametrize(
    "outputs, weighted", [("flatten", False), ("all_mean", False), ("diag_mean", True)], ids=["flatten", "all", "diag"]
)
@pytest.mark.parametrize("case", list(CASES))
def test_per_tensor_kernels(case, outputs, weighted):
    """groups="per_tensor": one kernel per parameter, from .layers() and .kernel(name); they sum to the whole."""
    model, x, jac = build(case)
    w = output_weights(n_outputs(jac)) if weighted else None
    ntk = entk.NTK(model, x, groups="per_tensor", outputs=outputs, output_weights=w)
    layers = ntk.layers()
    assert set(layers) == set(jac)
    for name in jac:
        want = brute_kernel(jac, outputs, w, names=[name])
        assert_close(dense(layers[name]), want, f"{case} layers()[{name!r}] {outputs}")
        assert_close(dense(ntk.kernel(name)), want, f"{case} kernel({name!r}) {outputs}")
    total = brute_kernel(jac, outputs, w)
    assert_close(sum(dense(k) for k in layers.values()), total, f"{case} Σ per-tensor kernels")
    assert_close(dense(ntk.kernel()), total, f"{case} kernel()")


@pytest.mark.parametrize("case", list(CASES))
def test_paths(case):
    """Every parameter is reported; the structured path takes all but the nonlinear uses."""
    model, x = CASES[case]()
    paths = entk.NTK(model, x).paths
    names = [k for k, _ in model.named_parameters()]
    assert set(paths) == set(names)
    for name in names:
        if name in EITHER.get(case, ()):
            assert paths[name] in ("structured", "generic"), name
        else:
            want = "generic" if name in GENERIC.get(case, ()) else "structured"
            assert paths[name] == want, f"{case}: {name} took the {paths[name]} path, want {want}"


def test_tms_paths_exactly():
    model, x = make_tms()
    assert entk.NTK(model, x).paths == {"W": "structured", "b": "structured"}


@pytest.mark.parametrize("outputs", OUTPUTS)
def test_tied_weight_kernel_alone(outputs):
    """The tied embedding/unembedding weight selected alone through params (cross terms of its two uses)."""
    model, x, jac = build("tied_embedding_linear")
    ntk = entk.NTK(model, x, params=["emb"], outputs=outputs)
    assert ntk.paths == {"emb.weight": "structured"}
    assert_close(dense(ntk.kernel()), brute_kernel(jac, outputs, names=["emb.weight"]))


# --- Groups ---


def test_named_groups():
    """groups={"a": ["fc1"], "b": ["fc2.weight"]}: each group, .layers(), lists of names, the whole."""
    model = _init(MLP(), 21)
    x = _normal(10, 5, seed=22)
    jac = brute_jacobians(model, x)
    w = output_weights(3)
    ntk = entk.NTK(model, x, groups={"a": ["fc1"], "b": ["fc2.weight"]}, outputs="flatten", output_weights=w)

    def want(*names: str) -> Tensor:
        return brute_kernel(jac, "flatten", w, names=list(names))

    assert_close(dense(ntk.kernel("a")), want("fc1.weight", "fc1.bias"), "kernel('a')")
    assert_close(dense(ntk.kernel("b")), want("fc2.weight"), "kernel('b')")
    layers = ntk.layers()
    assert set(layers) == {"a", "b"}
    assert_close(dense(layers["a"]), want("fc1.weight", "fc1.bias"), "layers()['a']")
    assert_close(dense(layers["b"]), want("fc2.weight"), "layers()['b']")
    assert_close(dense(ntk.kernel(["fc2.bias"])), want("fc2.bias"), "kernel(['fc2.bias'])")
    assert_close(dense(ntk.kernel(["fc1.weight", "fc2"])), want("fc1.weight", "fc2.weight", "fc2.bias"))
    # No params given: kernel() is over all parameters, grouped or not, and sums the per-tensor kernels.
    per_tensor = sum(want(name) for name in jac)
    assert_close(want(*jac), per_tensor, "brute force: whole = Σ per tensor")
    assert_close(dense(ntk.kernel()), per_tensor, "kernel()")
    assert_close(sum(dense(ntk.kernel([name])) for name in jac), per_tensor, "Σ kernel([name])")


def test_named_groups_with_params():
    """params restricts the selection: kernel() is then the groups' parameters only."""
    model = _init(MLP(), 21)
    x = _normal(10, 5, seed=22)
    jac = brute_jacobians(model, x)
    groups = {"a": ["fc1"], "b": ["fc2.weight"]}
    ntk = entk.NTK(model, x, params=["fc1", "fc2.weight"], groups=groups, outputs="all_mean")
    assert set(ntk.paths) == {"fc1.weight", "fc1.bias", "fc2.weight"}
    assert_close(dense(ntk.kernel()), brute_kernel(jac, "all_mean", names=["fc1.weight", "fc1.bias", "fc2.weight"]))
    assert_close(dense(ntk.kernel("b")), brute_kernel(jac, "all_mean", names=["fc2.weight"]))


@pytest.mark.parametrize("outputs", OUTPUTS)
def test_layers_default_per_module(outputs):
    """groups=None: .layers() has one kernel per module owning parameters."""
    model = _init(MLP(), 23)
    x = _normal(10, 5, seed=24)
    jac = brute_jacobians(model, x)
    layers = entk.NTK(model, x, outputs=outputs).layers()
    assert set(layers) == {"fc1", "fc2"}
    for mod in ("fc1", "fc2"):
        want = brute_kernel(jac, outputs, names=[f"{mod}.weight", f"{mod}.bias"])
        assert_close(dense(layers[mod]), want, f"layers()[{mod!r}]")


# --- Eigenpairs and kernel-vector products ---


@pytest.mark.parametrize("group", [None, "W", "b"])
@pytest.mark.parametrize("outputs, weighted", [("flatten", False), ("flatten", True), ("diag_mean", True)])
def test_eigenpairs(outputs, weighted, group):
    """Top-k eigenvalues as eigvalsh of the brute-force kernel gives them; K v = λ v; orthonormal vectors."""
    model, x, jac = build("tms")
    w = output_weights(n_outputs(jac)) if weighted else None
    k = 5
    ntk = entk.NTK(model, x, groups="per_tensor", outputs=outputs, output_weights=w)
    values, vectors = ntk.eigenpairs(k, group=group)
    kern = brute_kernel(jac, outputs, w, names=None if group is None else [group])
    want = torch.linalg.eigvalsh(kern).flip(0)[:k]
    assert values.shape == (k,) and vectors.shape == (kern.shape[0], k)
    assert (values[:-1] >= values[1:]).all(), "eigenvalues not descending"
    assert_close(values, want, "eigenvalues")
    top = want[0]
    residual = (kern @ vectors - vectors * values).abs().max() / top
    assert residual <= TOL, f"max |K v − λ v| / λ_1 = {residual:.3g}"
    assert_close(vectors.T @ vectors, torch.eye(k, dtype=DT), "VᵀV")


@pytest.mark.parametrize("outputs", OUTPUTS)
@pytest.mark.parametrize("case, group", [("tms", None), ("tms", "W"), ("transformer", "W_E"), ("views", None)])
def test_matvec(case, group, outputs):
    """ntk.matvec(group)(V) = K V against the brute-force kernel."""
    model, x, jac = build(case)
    w = output_weights(n_outputs(jac))
    ntk = entk.NTK(model, x, groups="per_tensor", outputs=outputs, output_weights=w)
    kern = brute_kernel(jac, outputs, w, names=None if group is None else [group])
    v = torch.randn(kern.shape[0], 3, generator=_gen(25), dtype=DT)
    assert_close(ntk.matvec(group)(v), kern @ v, f"{case} matvec({group!r}) {outputs}")
