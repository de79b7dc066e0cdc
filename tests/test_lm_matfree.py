"""The matrix-free route of entk.lm's per-module operator: kept linearisations of the downstream network, the
recomputing fallback and the products through the module's input Gram, each against brute-force ``torch.func``
Jacobians of the whole model on tiny random Gemma-3, Llama and GPT-2 models."""

import pytest
import torch

from entk import lm
from test_lm import N, _configs, brute_force_factor, close

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["gemma", "llama", "gpt2", "llama_bias"])
def tiny(request):
    torch.manual_seed(0)
    configs = _configs()
    # Llama's MLP projections with biases: the only nn.Linear here whose bias enters the products.
    configs["llama_bias"] = transformers.LlamaConfig(**{**configs["llama"].to_dict(), "mlp_bias": True})
    model = lm.load_causal_lm(configs[request.param]).double()
    ids = torch.randint(1, 50, (N, 7), generator=torch.Generator().manual_seed(1))
    u = lm.unembedding(model)
    return request.param, model, ids, lm.metric_sqrt(u.T @ u)


@pytest.mark.parametrize("kept", [True, False])
@pytest.mark.parametrize(("role", "block", "position"), [("mlp_out", 1, 3), ("mlp_out", 0, -1), ("embedding", 0, -1)])
def test_products_match_brute_force(tiny, kept, role, block, position):
    kind, model, ids, s = tiny
    module = lm.module_roles(model)[role][block]
    j = brute_force_factor(model, ids, module, position, s)
    if role == "embedding":
        j = j.reshape(j.shape[0], 50, -1)[:, torch.unique(ids)].flatten(1)
    # 1 GB keeps every linearisation of these tiny models; a few bytes keep nothing and cut one context a chunk.
    budget = 1 if kept else 1e-9
    op = lm.ModuleOperator(
        model, ids, module, position=position, metric_sqrt=s, route="matrix_free", max_memory_gb=budget
    )
    assert op._keep is kept
    assert len(op._chunks) == (1 if kept else N)
    # The Gram of the inputs serves an nn.Linear (not GPT-2's Conv1D) whose N·T' rows (5 contexts × 4 positions)
    # are no more than its input width (32); at the last of 7 positions there are 35.
    through_inputs = role == "mlp_out" and position == 3 and kind != "gpt2"
    assert (op._inputs_gram is not None) is through_inputs
    g = torch.Generator().manual_seed(2)
    v, u = torch.randn(op.dim, 3, generator=g, dtype=j.dtype), torch.randn(op.n_params, 3, generator=g, dtype=j.dtype)
    for _ in range(2):  # the second time on the kept linearisations
        close(op.matvec()(v), j @ (j.T @ v))
        close(op.gram_matvec()(u), j.T @ (j @ u))
    close(op.factor()(u), j @ u)
    close(op.factor_t()(v), j.T @ v)
    # One vector a pass (a Lanczos step) skips vmap on the kept linearisations.
    close(op.matvec()(v[:, :1]), j @ (j.T @ v[:, :1]))


@pytest.mark.parametrize("kept", [True, False])
def test_kept_linearisations_run_the_downstream_network_once(tiny, kept):
    _, model, ids, s = tiny
    module = lm.module_roles(model)["attn_out"][0]
    budget = 1 if kept else 1e-9
    op = lm.ModuleOperator(model, ids, module, metric_sqrt=s, route="matrix_free", max_memory_gb=budget)
    calls = []
    run = op._site.run
    op._site.run = lambda chunk, y: calls.append(1) or run(chunk, y)
    v = torch.randn(op.dim, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    op.matvec()(v)
    first = len(calls)
    op.matvec()(v)
    op.gram_matvec()(torch.randn(op.n_params, 2, dtype=torch.float64))
    # Kept: one primal pass per chunk, ever; recomputed: one per chunk for each jvp and each vjp.
    assert first == len(op._chunks) if kept else first == 2 * len(op._chunks)
    assert len(calls) == (first if kept else 3 * first)
