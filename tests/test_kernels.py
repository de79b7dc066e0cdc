"""eNTK kernels and eigenpairs against brute-force per-sample ``torch.func`` Jacobians in float64."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import entk
from conftest import default_dtype
from entk.core import compression, structured
from entk.core import kernel as kernel_module
from entk.kinds.models import TMS, ModMLP, modadd_inputs

pytestmark = pytest.mark.usefixtures("float64")


def brute_force_jacobian(model, x, names=None):
    """Loop over samples, one jacrev each: per-sample Jacobians (N, C, P)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params) if names is None else names
    rows = []
    for n in range(x.shape[0]):

        def f(sel, xn=x[n : n + 1]):
            return functional_call(model, {**params, **sel}, (xn,))[0]

        jac = jacrev(f)({k: params[k] for k in names})
        rows.append(torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in names], dim=1))
    return torch.stack(rows)


def reduce_jacobian(j, outputs="flatten", weights=None):
    """Contract the full (N, C, N, C) kernel of Jacobians j (N, C, P), then reduce it."""
    if weights is not None:
        j = j * weights[None, :, None]
    k4 = torch.einsum("ncp,mdp->ncmd", j, j)
    n, c = j.shape[:2]
    if outputs == "flatten":
        return k4.permute(1, 0, 3, 2).reshape(c * n, c * n)
    if outputs == "diag_mean":
        return torch.einsum("ncmc->nm", k4) / c
    return k4.sum(dim=(1, 3)) / c**2


def brute_force_ntk(model, x, names=None, outputs="flatten", weights=None):
    """The reference kernel: per-sample Jacobians by jacrev, contracted in full, reduced."""
    return reduce_jacobian(brute_force_jacobian(model, x, names), outputs, weights)


def expand_names(model, names):
    """Module names → their parameter names, as ``resolve_params`` reads them."""
    if names is None:
        return None
    mods = dict(model.named_modules())
    expanded = []
    for nm in names:
        expanded += [f"{nm}.{p}" for p, _ in mods[nm].named_parameters()] if nm in mods else [nm]
    return expanded


class Shared(nn.Module):
    """A Linear applied twice (weight sharing), which the structured path must not take."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.head(torch.sin(self.lin(torch.tanh(self.lin(x)))))


class TokenModel(nn.Module):
    """Embedding + LayerNorm + GELU head: module types with no special path."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 3)
        self.norm = nn.LayerNorm(6)
        self.out = nn.Linear(6, 4)

    def forward(self, tokens):
        return self.out(nn.functional.gelu(self.norm(self.emb(tokens).flatten(1))))


def conv_net():
    return nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Softplus(), nn.Flatten(), nn.Linear(8, 3))


def make_cases():
    g = torch.Generator().manual_seed(0)
    return {
        "mlp_tanh_bias": (
            nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)),
            torch.randn(6, 5, generator=g),
        ),
        "conv_softplus": (conv_net(), torch.randn(5, 6, generator=g)),
        "tms": (TMS(6, 3, generator=g), torch.rand(7, 6, generator=g)),
        "shared_linear": (Shared(), torch.randn(5, 4, generator=g)),
        "tokens": (TokenModel(), torch.randint(0, 7, (6, 2), generator=g)),
        "modmlp": (ModMLP(5, hidden=8, generator=g), modadd_inputs(5)[::3]),
        # Many samples, tiny layers: every output mode takes the Linear factor path.
        "many_samples": (
            nn.Sequential(nn.Linear(2, 2), nn.ELU(), nn.Linear(2, 2)),
            torch.randn(30, 2, generator=g),
        ),
    }


with default_dtype(torch.float64):
    CASES = make_cases()
SUBSETS = {
    "mlp_tanh_bias": [["0"], ["2.weight"], ["0.bias", "2"]],
    "conv_softplus": [["1"], ["4.bias"]],
    "tms": [["W"], ["b"]],
    "shared_linear": [["lin"], ["head"]],
    "tokens": [["emb"], ["norm.weight", "out.weight"]],
    "modmlp": [["fc1"], ["fc2"]],
    "many_samples": [["0"], ["2.bias"]],
}


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("outputs", entk.OUTPUT_MODES)
@pytest.mark.parametrize("weighted", [False, True])
def test_empirical_ntk_matches_brute_force(case, outputs, weighted):
    model, x = CASES[case]
    model = model.double()
    c = model(x).shape[1]
    w = torch.linspace(0.3, 1.7, c) if weighted else None
    for names in [None, *SUBSETS[case]]:
        got = entk.empirical_ntk(model, x, params=names, outputs=outputs, output_weights=w)
        ref = brute_force_ntk(model, x, expand_names(model, names), outputs, w)
        assert got.shape == ref.shape
        assert got.dtype == torch.float64
        assert rel_err(got, ref) <= 1e-6, (case, names)


@pytest.mark.parametrize("case", ["mlp_tanh_bias", "tokens", "tms", "modmlp", "many_samples"])
def test_layerwise_kernels_sum_to_full(case):
    model, x = CASES[case]
    model = model.double()
    for outputs in entk.OUTPUT_MODES:
        layers = entk.layerwise_ntk(model, x, outputs=outputs)
        owners = {n.rpartition(".")[0] for n, _ in model.named_parameters()}
        assert set(layers) == owners
        for name, k in layers.items():
            names = [n for n, _ in model.named_parameters() if n.rpartition(".")[0] == name]
            assert rel_err(k, brute_force_ntk(model, x, names, outputs)) <= 1e-6
        assert rel_err(sum(layers.values()), brute_force_ntk(model, x, None, outputs)) <= 1e-6


def test_float32_model_gives_float32_kernel():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).float()
    k = entk.empirical_ntk(model, torch.randn(5, 3, dtype=torch.float32))
    assert k.dtype == torch.float32 and k.shape == (10, 10)


@pytest.mark.parametrize(
    "case,outputs",
    [
        ("tms", "flatten"),
        ("mlp_tanh_bias", "diag_mean"),
        ("conv_softplus", "all_mean"),
        ("modmlp", "flatten"),
        ("many_samples", "diag_mean"),
    ],
)
def test_top_eigenpairs_match_dense_eigh(case, outputs):
    model, x = CASES[case]
    model = model.double()
    c = model(x).shape[1]
    w = torch.linspace(0.5, 1.5, c)
    ref = brute_force_ntk(model, x, None, outputs, w)
    ref_vals, ref_vecs = torch.linalg.eigh(ref)
    ref_vals, ref_vecs = ref_vals.flip(0), ref_vecs.flip(1)
    k = min(5, ref.shape[0])
    vals, vecs = entk.top_eigenpairs(model, x, k, outputs=outputs, output_weights=w)
    assert vals.shape == (k,) and vecs.shape == (ref.shape[0], k)
    assert torch.all(vals[:-1] >= vals[1:])
    assert rel_err(vals, ref_vals[:k]) <= 1e-8
    # K e = λ e against the brute-force kernel, and orthonormal columns.
    assert rel_err(ref @ vecs, vecs * vals) <= 1e-6
    assert torch.allclose(vecs.T @ vecs, torch.eye(k), atol=1e-8)
    # Deterministic signs: the largest-magnitude entry of each column is positive.
    assert torch.all(vecs[vecs.abs().argmax(0), torch.arange(k)] > 0)


def test_factor_path_never_forms_the_dense_kernel(monkeypatch):
    model, x = CASES["tms"]
    model = model.double()
    kernel = entk.compact_ntk(model, x)
    assert kernel.kind == "factor" and kernel.data.shape == (6 * 7, 6 * 3 + 6)
    monkeypatch.setattr(entk.Kernel, "dense", lambda self: pytest.fail("dense kernel formed"))
    vals, _ = entk.kernel_eigenpairs(kernel, 4)
    assert vals.shape == (4,)


def test_output_weights_after_the_fact_equal_weights_in_the_jacobian():
    model, x = CASES["tms"]
    model = model.double()
    w = torch.linspace(0.2, 2.0, 6)
    later = entk.compact_ntk(model, x).scale_outputs(w).dense()
    assert rel_err(later, brute_force_ntk(model, x, None, "flatten", w)) <= 1e-10


def test_cliff_finds_planted_gap():
    lam = torch.cat([torch.linspace(10, 5, 7), torch.linspace(0.05, 0.01, 20)])
    assert entk.cliff(lam) == 7
    # The first five values 10, 9.17, 8.33, 7.5, 6.67: ratios 1.091, 1.100, 1.111, 1.125 grow, so the last gap.
    assert entk.cliff(lam, max_index=5) == 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"params": ["nope"]}, "unknown parameter or module name 'nope'"),
        ({"params": "0"}, "must be a list"),
        ({"outputs": "trace"}, "unknown outputs mode 'trace'"),
        ({"output_weights": torch.ones(4)}, r"output_weights must have shape \(3,\)"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    model, x = CASES["mlp_tanh_bias"]
    with pytest.raises(ValueError, match=match):
        entk.empirical_ntk(model.double(), x, **kwargs)


def test_non_2d_output_and_too_large_k_are_named():
    with pytest.raises(ValueError, match=r"outputs \(N, C\)"):
        entk.empirical_ntk(nn.Linear(3, 2).double(), torch.randn(4, 5, 3))
    model, x = CASES["mlp_tanh_bias"]
    with pytest.raises(ValueError, match=r"k must lie in \[1, 18\]"):
        entk.top_eigenpairs(model.double(), x, 19)


def test_layer_ntks_share_one_pass_and_match_brute_force():
    model, x = CASES["mlp_tanh_bias"]
    model = model.double()
    layers = {"first": ["0"], "bias2": ["2.bias"], "both": ["0", "2.weight"], "all": None}
    got = entk.layer_ntks(model, x, layers, outputs="diag_mean")
    expanded = {
        "first": ["0.weight", "0.bias"],
        "bias2": ["2.bias"],
        "both": ["0.weight", "0.bias", "2.weight"],
        "all": None,
    }
    for name, names in expanded.items():
        assert rel_err(got[name].dense(), brute_force_ntk(model, x, names, "diag_mean")) <= 1e-6, name
    # One pass: the four groups cost the model's modules as many forward calls as the whole model alone.
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()]
    try:
        entk.layer_ntks(model, x, layers, outputs="diag_mean")
        together = len(calls)
        calls.clear()
        entk.layer_ntks(model, x, {"all": None}, outputs="diag_mean")
    finally:
        for hook in hooks:
            hook.remove()
    assert together == len(calls) > 0


# --- Structured layer types, diag_mean compression, chunking ---


class TokenMLP(nn.Module):
    """Embedding (optionally with a padding row) of 3 tokens → tanh → Linear."""

    def __init__(self, vocab=20, padding_idx=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, 3, padding_idx=padding_idx)
        self.out = nn.Linear(9, 4)

    def forward(self, tokens):
        return self.out(torch.tanh(self.emb(tokens)).flatten(1))


class SeqMLP(nn.Module):
    """Two Linears applied position-wise to (N, 2, 3, 4) inputs; positions averaged at the end."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.inp(x))).mean((1, 2))


class TwoReadouts(nn.Module):
    """fc1's units reach the outputs through two readouts: per-unit output gradients of rank 2."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 5, bias=False)
        self.fc3 = nn.Linear(6, 5, bias=False)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h) + self.fc3(h * h)


def make_structured_cases():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    padded = torch.randint(0, 6, (6, 3), generator=g)
    padded[::2, 1] = 2
    return {
        "embedding": (TokenMLP(), torch.randint(0, 20, (6, 3), generator=g), [["emb"], ["out.bias"]]),
        "embedding_padding": (TokenMLP(6, padding_idx=2), padded, [["emb"]]),
        "conv1d": (
            nn.Sequential(
                nn.Conv1d(2, 3, 3, stride=2, padding=1),
                nn.Tanh(),
                nn.Conv1d(3, 2, 2, padding="same", dilation=2, padding_mode="circular", bias=False),
                nn.Flatten(),
                nn.Linear(8, 3),
            ),
            torch.randn(5, 2, 7, generator=g),
            [["0"], ["2"]],
        ),
        "conv2d": (
            nn.Sequential(
                nn.Conv2d(2, 3, 3, stride=2, padding=1),
                nn.Softplus(),
                nn.Conv2d(3, 2, (2, 3), padding="same", dilation=(1, 2), padding_mode="reflect"),
                nn.Flatten(),
                nn.Linear(18, 3),
            ),
            torch.randn(5, 2, 5, 5, generator=g),
            [["0.bias"], ["2"]],
        ),
        "sequence_linear": (SeqMLP(), torch.randn(5, 2, 3, 4, generator=g), [["inp"], ["out.weight"]]),
        # Wide enough that the dense kernel goes position pair by position pair.
        "sequence_pairs": (
            nn.Sequential(nn.Linear(9, 10), nn.Tanh(), nn.Flatten(), nn.Linear(20, 3)),
            torch.randn(5, 2, 9, generator=g),
            [["0"]],
        ),
        "embedding_single_token": (
            nn.Sequential(nn.Embedding(7, 3), nn.Tanh(), nn.Linear(3, 2)),
            torch.randint(0, 7, (6,), generator=g),
            [["0"]],
        ),
        "deep_tanh": (
            nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 4)),
            torch.randn(6, 5, generator=g),
            [["0"]],
        ),
        "two_readouts": (TwoReadouts(), torch.randn(7, 5, generator=g), [["fc1"]]),
    }


with default_dtype(torch.float64):
    STRUCTURED = make_structured_cases()


@pytest.mark.parametrize("case", list(STRUCTURED))
def test_structured_layers_match_brute_force(case):
    model, x, subsets = STRUCTURED[case]
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    w = torch.linspace(0.3, 1.7, model(x).shape[1])
    for names in [None, *subsets]:
        jac = brute_force_jacobian(model, x, expand_names(model, names))
        for weights in (None, w):
            for outputs in entk.OUTPUT_MODES:
                got = entk.empirical_ntk(model, x, params=names, outputs=outputs, output_weights=weights)
                ref = reduce_jacobian(jac, outputs, weights)
                assert got.dtype == torch.float64
                assert rel_err(got, ref) <= 1e-6, (names, weights is None, outputs)


class Doubled(nn.Linear):
    """A Linear subclass whose forward is not the plain layer's."""

    def forward(self, x):
        return super().forward(2 * x)


class Tied(nn.Module):
    """Embedding and readout share one weight."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.out = nn.Linear(4, 5, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, tokens):
        return self.out(torch.tanh(self.emb(tokens)).mean(1))


def structured_layers(model, x):
    """Modules all of whose parameters take the structured path."""
    paths = entk.NTK(model, x).paths
    modules = {name.rpartition(".")[0] for name in paths}
    return {m for m in modules if all(p == "structured" for n, p in paths.items() if n.rpartition(".")[0] == m)}


def test_structured_path_is_taken_exactly_where_exact():
    for case, layers in [
        ("embedding", {"emb", "out"}),
        ("conv1d", {"0", "2", "4"}),
        ("conv2d", {"0", "2", "4"}),
        ("sequence_linear", {"inp", "out"}),
    ]:
        model, x, _ = STRUCTURED[case]
        assert structured_layers(model.double(), x.double() if x.is_floating_point() else x) == layers
    # Shared and tied weights are read from the operations: each use gets its factors, cross terms exact.
    model, x = CASES["shared_linear"]
    assert structured_layers(model.double(), x) == {"lin", "head"}
    # A subclass whose forward scales its input still calls F.linear: structured, with the scaled input.
    doubled = nn.Sequential(Doubled(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    assert structured_layers(doubled, torch.randn(4, 3)) == {"0", "2"}
    # max_norm renormalises the table in place: generic.
    capped = nn.Sequential(nn.Embedding(5, 3, max_norm=1.0), nn.Flatten(), nn.Linear(6, 2)).double()
    assert structured_layers(capped, torch.randint(0, 5, (4, 2))) == {"2"}
    tied, tokens = Tied().double(), torch.randint(0, 5, (5, 3))
    assert structured_layers(tied, tokens) == {"emb"}
    for model, x in [(doubled, torch.randn(4, 3)), (tied, tokens)]:
        ref = brute_force_ntk(model, x, None, "diag_mean")
        assert rel_err(entk.empirical_ntk(model, x, outputs="diag_mean"), ref) <= 1e-6


def spy_diag_mean_widths(monkeypatch):
    """Record each diag_mean layer's row width: None where compression was abandoned."""
    widths = []
    real = compression.join_rows

    def spy(rows, basis):
        h = real(rows, basis)
        widths.append(None if basis is None else h.shape[2])
        return h

    monkeypatch.setattr(compression, "join_rows", spy)
    return widths


def test_diag_mean_compression_on_modmlp(monkeypatch):
    widths = spy_diag_mean_widths(monkeypatch)
    model, x = ModMLP(7, hidden=16, generator=torch.Generator().manual_seed(0)).double(), modadd_inputs(7)
    w = torch.linspace(0.5, 1.5, 7)
    for weights in (None, w):
        got = entk.layer_ntks(
            model, x, {"layer1": ["fc1"], "layer2": ["fc2"], "full": None}, outputs="diag_mean", output_weights=weights
        )
        for name, names in [("layer1", ["fc1.weight"]), ("layer2", ["fc2.weight"]), ("full", None)]:
            ref = brute_force_ntk(model, x, names, "diag_mean", weights)
            assert rel_err(got[name].dense(), ref) <= 1e-6, name
        # Layer 2's rows have rank 1 overall: a (N, hidden) factor instead of a dense N × N.
        assert got["layer2"].kind == "factor" and got["layer2"].data.shape == (49, 16)
    # Rank 1 per unit: hidden columns for fc1 instead of p·hidden, p for fc2 instead of p².
    assert widths == [16, 7, 16, 7]
    # In chunks, only the first holds its G; the others project class by class onto the bases.
    calls = []
    for name in ("chunk_grads", "chunk_projections"):
        real = getattr(structured, name)
        monkeypatch.setattr(structured, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    chunked = entk.layer_ntks(
        model,
        x,
        {"layer1": ["fc1"], "layer2": ["fc2"], "full": None},
        outputs="diag_mean",
        output_weights=w,
        max_memory_gb=2e-5,
    )
    assert calls.count("chunk_grads") == 1 and calls.count("chunk_projections") >= 3
    for name, k in chunked.items():
        assert rel_err(k.dense(), got[name].dense()) <= 1e-10, name


@pytest.mark.parametrize(
    "case,budget", [("two_readouts", 2e-6), ("deep_tanh", 3e-6), ("conv2d", 1e-5), ("embedding", 1e-6)]
)
def test_tiny_memory_budget_chunks_to_the_same_kernel(case, budget, monkeypatch):
    model, x, _ = STRUCTURED[case]
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    jac = brute_force_jacobian(model, x)
    chunks = []
    real = structured.chunk_forward
    monkeypatch.setattr(structured, "chunk_forward", lambda *a: chunks.append(1) or real(*a))
    widths = spy_diag_mean_widths(monkeypatch)
    for outputs in entk.OUTPUT_MODES:
        start = len(chunks)
        whole = entk.empirical_ntk(model, x, outputs=outputs)
        middle = len(chunks)
        got = entk.empirical_ntk(model, x, outputs=outputs, max_memory_gb=budget)
        assert middle - start == 1 and len(chunks) - middle >= 3
        assert rel_err(got, whole) <= 1e-10
        assert rel_err(got, reduce_jacobian(jac, outputs)) <= 1e-6
    if case == "two_readouts":
        # Bases grow across chunks up to rank 2 per unit (6 units); the readouts have rank 1.
        assert widths == [12, 5, 5, 12, 5, 5]
    if case == "deep_tanh":
        # The full-rank first layer abandons compression part way; the layer before the readout
        # has rank 1 per unit; the readout too, chunked or not.
        assert widths == [None, 6, 4] * 2


def test_bad_memory_budget_is_named():
    model, x = CASES["mlp_tanh_bias"]
    with pytest.raises(ValueError, match="max_memory_gb must be positive"):
        entk.compact_ntk(model.double(), x, max_memory_gb=0)


def test_float32_model_computes_in_float32():
    model = ModMLP(5, hidden=8).float()
    x = modadd_inputs(5).float()
    got = entk.layer_ntks(model, x, {"a": ["fc1"], "b": ["fc2"]}, outputs="diag_mean")
    assert all(k.data.dtype == torch.float32 for k in got.values())
    ref = brute_force_ntk(model.double(), x.double(), None, "diag_mean")
    assert rel_err((got["a"] + got["b"]).dense().double(), ref) <= 1e-5


def test_dense_from_a_factor_forms_one_triangle_and_skips_zero_rows(monkeypatch):
    g = torch.Generator().manual_seed(3)
    f = torch.randn(3600, 40, generator=g)
    f[::3] = 0  # rows of outputs behind a ReLU that is off
    pairs = []
    real = kernel_module.fill_symmetric

    def spy(dim, like, rows, pair, block):
        return real(dim, like, rows, lambda p, q: pairs.append(p.shape[0] * q.shape[0]) or pair(p, q), block)

    monkeypatch.setattr(kernel_module, "fill_symmetric", spy)
    got = entk.Kernel("factor", f, 3600, 1, "flatten").dense()
    assert torch.equal(got[::3], torch.zeros(1200, 3600)) and rel_err(got, f @ f.T) <= 1e-14
    # 2400 nonzero rows in blocks of 1024: 3 blocks a side, 6 products of the 9, fewer pairs than 2400².
    assert len(pairs) == 6 and sum(pairs) < 2400 * 2400
