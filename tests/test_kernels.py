"""eNTK kernels and eigenpairs against brute-force per-sample ``torch.func`` Jacobians in float64."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import entk
from entk.models import TMS, ModMLP, modadd_inputs

torch.set_default_dtype(torch.float64)


def brute_force_ntk(model, x, names=None, outputs="flatten", weights=None):
    """Loop over samples, one jacrev each; contract the full (N, C, N, C) kernel, then reduce."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params) if names is None else names
    rows = []
    for n in range(x.shape[0]):
        def f(sel, xn=x[n : n + 1]):
            return functional_call(model, {**params, **sel}, (xn,))[0]

        jac = jacrev(f)({k: params[k] for k in names})
        rows.append(torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in names], dim=1))
    j = torch.stack(rows)  # (N, C, P)
    if weights is not None:
        j = j * weights[None, :, None]
    k4 = torch.einsum("ncp,mdp->ncmd", j, j)
    n, c = j.shape[:2]
    if outputs == "flatten":
        return k4.permute(1, 0, 3, 2).reshape(c * n, c * n)
    if outputs == "diag_mean":
        return torch.einsum("ncmc->nm", k4) / c
    return k4.sum(dim=(1, 3)) / c**2


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
    return nn.Sequential(
        nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Softplus(), nn.Flatten(), nn.Linear(8, 3)
    )


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
        expanded = None
        if names is not None:
            mods = dict(model.named_modules())
            expanded = []
            for nm in names:
                if nm in mods:
                    expanded += [f"{nm}.{p}" for p, _ in mods[nm].named_parameters()]
                else:
                    expanded.append(nm)
        ref = brute_force_ntk(model, x, expanded, outputs, w)
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


@pytest.mark.parametrize("case,outputs", [("tms", "flatten"), ("mlp_tanh_bias", "diag_mean"),
                                          ("conv_softplus", "all_mean"), ("modmlp", "flatten"),
                                          ("many_samples", "diag_mean")])
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
    assert entk.cliff(lam, max_index=5) in range(1, 5)


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
    expanded = {"first": ["0.weight", "0.bias"], "bias2": ["2.bias"], "both": ["0.weight", "0.bias", "2.weight"], "all": None}
    for name, names in expanded.items():
        assert rel_err(got[name].dense(), brute_force_ntk(model, x, names, "diag_mean")) <= 1e-6, name
