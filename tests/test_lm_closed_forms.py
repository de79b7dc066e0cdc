"""Closed-form backward passes of norms and activations (entk.core.lm_closed_forms), which the per-module operator's
stored Jacobian D̃ runs its C reverse passes through: each against autograd's own graph of the module, and the
operator's products on them against brute-force ``torch.func`` Jacobians of the whole model."""

import pytest
import torch
from torch import nn

import entk.core.lm_operator as lm_operator
from entk import lm
from entk.core.lm_closed_forms import closed_form_calls
from test_lm import N, _configs, brute_force_factor, close

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["gemma", "llama"])
def tiny(request):
    torch.manual_seed(0)
    model = lm.load_causal_lm(_configs()[request.param]).double()
    # Norm weights away from their initial 0 (Gemma's 1 + w) or 1 (Llama's w), so that a wrong scale shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name)), dtype=p.dtype))
    ids = torch.randint(1, 50, (N, 7), generator=torch.Generator().manual_seed(1))
    u = lm.unembedding(model)
    return request.param, model, ids, lm.metric_sqrt(u.T @ u)


def _graph_names(out: torch.Tensor) -> set[str]:
    names, stack, seen = set(), [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack += [next_fn for next_fn, _ in node.next_functions]
    return names


def _pullback(module, x, cot, calls):
    x = x.detach().requires_grad_()
    with lm_operator._replaced_calls(calls):
        out = module(x)
    return out, torch.autograd.grad(out, x, cot)[0]


def test_norms_and_activations_take_their_closed_forms_with_autograds_pullback(tiny):
    _, model, _, _ = tiny
    layer = lm.decoder_layers(model)[0]
    g = torch.Generator().manual_seed(3)
    # A norm alone, and an MLP (its activation; Gemma's GELU, Llama's SiLU).
    for module, name in ((layer.post_attention_layernorm, "_RMSNormBackward"), (layer.mlp, "_ElementwiseBackward")):
        x = torch.randn(N, 7, 16, generator=g, dtype=torch.float64)
        cot = torch.randn(N, 7, 16, generator=g, dtype=torch.float64)
        out, pulled = _pullback(module, x, cot, closed_form_calls(model))
        expected_out, expected = _pullback(module, x, cot, {})
        assert name in _graph_names(out)
        assert torch.equal(out, expected_out)
        close(pulled, expected)


class _Scaled(nn.Module):
    """Parameter-free but not element-wise: every output depends on the row's mean."""

    def forward(self, x):
        return x * x.mean(-1, keepdim=True)


@pytest.mark.parametrize(
    "module",
    [nn.LayerNorm(16, bias=False, dtype=torch.float64), nn.Softmax(dim=-1), _Scaled()],
    ids=["layer_norm", "softmax", "row_mean"],
)
def test_modules_unlike_the_closed_forms_are_left_alone(module):
    # A LayerNorm without bias has a norm's parameters (one 1-D weight and an eps) but subtracts the mean; softmax
    # and x·mean(x) take no parameters but are not element-wise (the last commutes with permutations of x).
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    cot = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    out, pulled = _pullback(module, x, cot, closed_form_calls(module))
    expected_out, expected = _pullback(module, x, cot, {})
    assert torch.equal(out, expected_out)
    torch.testing.assert_close(pulled, expected, rtol=0, atol=0)
    assert not _graph_names(out) & {"_RMSNormBackward", "_ElementwiseBackward"}


@pytest.mark.parametrize(("role", "block"), [("mlp_out", 0), ("attn_out", 0), ("embedding", 0)])
def test_stored_jacobian_in_passes_of_one_context_matches_brute_force(tiny, role, block, monkeypatch):
    # A byte per group: each context's C reverse passes on its own graph, written into its rows of D̃.
    monkeypatch.setattr(lm_operator, "_GROUP_SAVED_BYTES", 1)
    _, model, ids, s = tiny
    module = lm.module_roles(model)[role][block]
    j = brute_force_factor(model, ids, module, -1, s)
    if role == "embedding":
        j = j.reshape(j.shape[0], 50, -1)[:, torch.unique(ids)].flatten(1)
    op = lm.ModuleOperator(model, ids, module, metric_sqrt=s, route="jacobian")
    g = torch.Generator().manual_seed(2)
    v, u = torch.randn(op.dim, 3, generator=g, dtype=j.dtype), torch.randn(op.n_params, 3, generator=g, dtype=j.dtype)
    close(op.factor()(u), j @ u)
    close(op.factor_t()(v), j.T @ v)
