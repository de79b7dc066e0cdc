"""entk.lm's per-module operator against brute-force ``torch.func`` Jacobians of the whole model, on tiny
random Gemma-3, Llama and GPT-2 models built from configs (nothing is downloaded)."""

import dataclasses
from unittest import mock

import pytest
import torch
from torch.func import functional_call, jacrev

from entk import lm
from entk.core import lm_operator
from entk.core.lm_operator import _first
from entk.core.solvers import default_block_size

transformers = pytest.importorskip("transformers")

N, T = 5, 7


def _configs() -> dict:
    small = {"vocab_size": 50, "max_position_embeddings": 16}
    return {
        "gemma": transformers.Gemma3TextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            **small,
        ),
        "llama": transformers.LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=False,
            **small,
        ),
        "gpt2": transformers.GPT2Config(
            n_embd=16, n_layer=2, n_head=2, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0
        ),
    }


@pytest.fixture(scope="module", params=["gemma", "llama", "gpt2"])
def tiny(request):
    torch.manual_seed(0)
    model = lm.load_causal_lm(_configs()[request.param]).double()
    # Token 0 is Gemma's padding_idx, whose row autograd gives no gradient (a training convention): the
    # brute force below would miss its Jacobian, which the operator keeps.
    ids = torch.randint(1, 50, (N, T), generator=torch.Generator().manual_seed(1))
    u = lm.unembedding(model)
    return request.param, model, ids, lm.metric_sqrt(u.T @ u)


def brute_force_factor(model, ids, module, position, s):
    """S^½ J (N·C, P), class-major rows, from jacrev of the whole model with respect to the module's parameters."""
    f = lm.FinalHidden(model, position, s)
    prefix = f"lm.{module}."
    params = {n: p.detach() for n, p in f.named_parameters() if n.startswith(prefix)}
    jac = jacrev(lambda p: functional_call(f, p, (ids,)))(params)
    c = s.shape[0]
    n = ids.shape[0]
    j = torch.cat([jac[k].reshape(n, c, -1) for k in params], dim=-1)
    return j.transpose(0, 1).reshape(n * c, -1)


def close(actual, expected):
    # Gemma and Llama norm and rotate in float32 inside a float64 model: agreement to that precision.
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


EXPECTED_ROLES = {
    "gemma": ("model.layers.{}.mlp.down_proj", "model.layers.{}.self_attn.o_proj", "model.embed_tokens"),
    "llama": ("model.layers.{}.mlp.down_proj", "model.layers.{}.self_attn.o_proj", "model.embed_tokens"),
    "gpt2": ("transformer.h.{}.mlp.c_proj", "transformer.h.{}.attn.c_proj", "transformer.wte"),
}


def test_module_roles(tiny):
    kind, model, _, _ = tiny
    mlp, attn, emb = EXPECTED_ROLES[kind]
    assert lm.module_roles(model) == {
        "mlp_out": [mlp.format(i) for i in range(2)],
        "attn_out": [attn.format(i) for i in range(2)],
        "embedding": [emb],
    }


@pytest.mark.parametrize("route", ["jacobian", "matrix_free"])
@pytest.mark.parametrize(
    ("role", "block", "position"), [("mlp_out", 0, -1), ("attn_out", 1, -1), ("mlp_out", 1, 3), ("embedding", 0, -1)]
)
def test_products_match_brute_force(tiny, role, block, position, route):
    _, model, ids, s = tiny
    module = lm.module_roles(model)[role][block]
    j = brute_force_factor(model, ids, module, position, s)
    if role == "embedding":
        # The operator's parameters are the rows of the tokens that occur, in token order.
        j = j.reshape(j.shape[0], 50, -1)[:, torch.unique(ids)].flatten(1)
    op = lm.ModuleOperator(model, ids, module, position=position, metric_sqrt=s, route=route)
    assert (op.dim, op.n_params) == tuple(j.shape)
    g = torch.Generator().manual_seed(2)
    # Random vectors: an all-ones cotangent through a final norm has a (near) zero derivative.
    v, u = torch.randn(op.dim, 3, generator=g, dtype=j.dtype), torch.randn(op.n_params, 3, generator=g, dtype=j.dtype)
    close(op.matvec()(v), j @ (j.T @ v))
    close(op.gram_matvec()(u), j.T @ (j @ u))
    close(op.factor()(u), j @ u)
    close(op.factor_t()(v), j.T @ v)


def test_spectrum_matches_dense(tiny):
    _, model, ids, s = tiny
    module = lm.module_roles(model)["mlp_out"][0]
    j = brute_force_factor(model, ids, module, -1, s)
    evals, evecs = torch.linalg.eigh(j @ j.T)
    vals, vecs = lm.module_operator(model, ids, module, metric_sqrt=s).eigenpairs(6)
    close(vals, evals.flip(0)[:6])
    overlap = (vecs.T @ evecs.flip(1)[:, :6]).abs().diagonal()
    assert overlap.min() > 1 - 1e-6


@pytest.mark.parametrize("side", ["kernel", "parameter"])
def test_spectrum_from_the_lanczos_ritz_vectors_matches_dense(tiny, side):
    # N·C = 80 < P (512, GPT-2's 1040) runs the solver on K; 80 contexts (N·C = 1280 > P) on the parameter
    # side, where the start vectors are mapped as J̃ᵀ v.
    _, model, ids, s = tiny
    if side == "parameter":
        ids = torch.randint(1, 50, (80, T), generator=torch.Generator().manual_seed(3))
    module = lm.module_roles(model)["mlp_out"][0]
    j = brute_force_factor(model, ids, module, -1, s)
    evals = torch.linalg.eigvalsh(j.T @ j if side == "parameter" else j @ j.T).flip(0)
    op = lm.module_operator(model, ids, module, metric_sqrt=s)
    _, start = lm.lanczos(op.matvec(), op.dim, steps=12, k=6, dtype=j.dtype)
    vals, vecs, info = op.eigenpairs(6, start=start, return_info=True)
    assert info.side == side and info.converged
    close(vals, evals[:6])
    close(vecs.T @ (j @ (j.T @ vecs)), torch.diag(vals))


def test_embedding_rows_that_occur(tiny):
    _, model, ids, s = tiny
    module = lm.module_roles(model)["embedding"][0]
    j = brute_force_factor(model, ids, module, -1, s)
    op = lm.module_operator(model, ids, module, metric_sqrt=s)
    # Only rows of tokens in the contexts have a Jacobian; the operator keeps those alone.
    c = s.shape[0]
    used = j.reshape(op.dim, -1, c).abs().sum(dim=(0, 2)) > 0
    assert op.n_params == int(used.sum()) * c == torch.unique(ids).numel() * c
    v = torch.randn(op.dim, 2, generator=torch.Generator().manual_seed(3), dtype=j.dtype)
    close(op.matvec()(v), j @ (j.T @ v))


@pytest.mark.parametrize("route", ["jacobian", "matrix_free"])
def test_chunks_of_contexts_give_the_brute_force_products(tiny, route):
    _, model, ids, s = tiny
    module = lm.module_roles(model)["attn_out"][0]
    j = brute_force_factor(model, ids, module, -1, s)
    chunked = lm.ModuleOperator(model, ids, module, metric_sqrt=s, max_memory_gb=1e-6, route=route)
    assert len(chunked._chunks) == N
    g = torch.Generator().manual_seed(4)
    v = torch.randn(chunked.dim, 2, generator=g, dtype=j.dtype)
    u = torch.randn(chunked.n_params, 2, generator=g, dtype=j.dtype)
    # A chunk dropped or counted twice changes its contexts' rows of J̃ u and every entry of J̃ᵀ J̃ u.
    close(chunked.matvec()(v), j @ (j.T @ v))
    close(chunked.gram_matvec()(u), j.T @ (j @ u))


@pytest.mark.parametrize(("block", "kept"), [(0, [0, 1, 2, 3]), (-1, [3])])
def test_stored_jacobian_keeps_the_positions_that_reach_the_output(tiny, block, kept):
    _, model, ids, s = tiny
    module = lm.module_roles(model)["mlp_out"][block]
    op = lm.ModuleOperator(model, ids, module, position=3, metric_sqrt=s, route="jacobian")
    # The last block's MLP reaches the output only at the output's own position; an earlier block's, through
    # attention, at every position up to it.
    assert [c[3].tolist() for c in op._chunks] == [kept]
    j = brute_force_factor(model, ids, module, 3, s)
    u = torch.randn(op.n_params, 2, generator=torch.Generator().manual_seed(5), dtype=j.dtype)
    close(op.gram_matvec()(u), j.T @ (j @ u))
    close(op.factor()(u), j @ u)


def _whole_last_block(op: lm.ModuleOperator) -> tuple[torch.Tensor, torch.Tensor]:
    """D̃ and its kept positions with the last block replayed at every position."""
    site = dataclasses.replace(op._site, at_position=False)
    with mock.patch.object(op, "_site", site):
        return op._jacobian(slice(0, op.n_samples))


@pytest.mark.parametrize("role", ["mlp_out", "attn_out", "embedding"])
@pytest.mark.parametrize("position", [-1, 3, 0])
def test_last_block_at_the_position_alone_gives_the_whole_blocks_jacobian(tiny, role, position):
    _, model, ids, s = tiny
    module = lm.module_roles(model)[role][0]
    op = lm.ModuleOperator(model, ids, module, position=position, metric_sqrt=s, route="jacobian")
    assert op._site.at_position
    jac, keep = _whole_last_block(op)
    assert torch.equal(op._chunks[0][3], keep)
    close(op._chunks[0][2], jac)


def test_a_deeper_model_replays_its_middle_blocks_whole(tiny):
    kind, _, ids, s = tiny
    config = _configs()[kind]
    if kind == "gpt2":
        config.n_layer = 3
    else:
        config.num_hidden_layers = 3
        if kind == "gemma":
            config.layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    torch.manual_seed(0)
    # Frozen: the brute force's parameters are its own; the others would put a graph on its Jacobian.
    model = lm.load_causal_lm(config).double().requires_grad_(False)
    u = lm.unembedding(model)
    s = lm.metric_sqrt(u.T @ u)
    for role in ("mlp_out", "embedding"):
        module = lm.module_roles(model)[role][0]
        j = brute_force_factor(model, ids, module, -1, s)
        if role == "embedding":
            j = j.reshape(j.shape[0], 50, -1)[:, torch.unique(ids)].flatten(1)
        op = lm.ModuleOperator(model, ids, module, metric_sqrt=s, route="jacobian")
        assert op._site.at_position
        u = torch.randn(op.n_params, 2, generator=torch.Generator().manual_seed(6), dtype=j.dtype)
        close(op.gram_matvec()(u), j.T @ (j @ u))


def test_a_last_block_that_disagrees_at_the_position_is_replayed_whole(tiny, monkeypatch):
    _, model, ids, s = tiny
    module = lm.module_roles(model)["mlp_out"][0]
    # As if the block read other positions besides its keys and values: its output at the position alone is not
    # the whole block's there, and the check before any product must notice.
    monkeypatch.setattr(lm_operator, "_at_position", lambda layer, args, kwargs, p: 2 * _first(layer(*args, **kwargs)))
    with pytest.warns(UserWarning, match="replaying it at every position"):
        op = lm.ModuleOperator(model, ids, module, metric_sqrt=s, route="jacobian")
    assert not op._site.at_position
    j = brute_force_factor(model, ids, module, -1, s)
    u = torch.randn(op.n_params, 2, generator=torch.Generator().manual_seed(7), dtype=j.dtype)
    close(op.gram_matvec()(u), j.T @ (j @ u))


def stored_jacobians(model, ids, modules, position, s) -> dict[str, lm.StoredJacobian]:
    """Every module's D̃ from one chain of reverse passes, joined over its groups of contexts."""
    keep = {m: kept for m, (kept, _) in lm.downstream_layout(model, ids, modules, position).items()}
    values = {}
    for rows, parts in lm.downstream_jacobians(model, ids, modules, position=position, metric_sqrt=s):
        for m, part in parts.items():
            values.setdefault(m, torch.full((len(ids), *part.shape[1:]), torch.nan, dtype=part.dtype))[rows] = part
    return {m: lm.StoredJacobian(values[m], keep[m]) for m in modules}


def _operator_products_match_brute_force(model, ids, module, position, s, stored):
    j = brute_force_factor(model, ids, module, position, s).detach()
    if module == lm.module_roles(model)["embedding"][0]:
        j = j.reshape(j.shape[0], 50, -1)[:, torch.unique(ids)].flatten(1)
    op = lm.ModuleOperator(model, ids, module, position=position, metric_sqrt=s, jacobian=stored)
    assert op.route == "jacobian"
    g = torch.Generator().manual_seed(8)
    v, u = torch.randn(op.dim, 2, generator=g, dtype=j.dtype), torch.randn(op.n_params, 2, generator=g, dtype=j.dtype)
    close(op.matvec()(v), j @ (j.T @ v))
    close(op.gram_matvec()(u), j.T @ (j @ u))


@pytest.mark.parametrize("position", [-1, 3, 0])
def test_one_chain_gives_every_modules_jacobian(tiny, position, monkeypatch):
    _, model, ids, s = tiny
    roles = lm.module_roles(model)
    modules = [*roles["embedding"], *roles["attn_out"], *roles["mlp_out"]]
    # Groups of one context: the chain's rows must land where they belong.
    monkeypatch.setattr(lm_operator, "_CHAIN_GROUP_SAVED_BYTES", 1)
    stored = stored_jacobians(model, ids, modules, position, s)
    for module in modules:
        _operator_products_match_brute_force(model, ids, module, position, s, stored[module])
    # The last block's modules reach the output at its position alone, the others at every position up to it.
    p = position % T
    assert {m: stored[m].keep.tolist() for m in modules} == {
        m: [p] if m in (roles["attn_out"][-1], roles["mlp_out"][-1]) else list(range(p + 1)) for m in modules
    }


def test_a_chain_of_later_modules_stops_at_the_first(tiny):
    _, model, ids, s = tiny
    module = lm.module_roles(model)["mlp_out"][1]
    # Without the embedding the graph starts at the module: the same D̃ as the operator's own.
    stored = stored_jacobians(model, ids, [module], -1, s)[module]
    own = lm.ModuleOperator(model, ids, module, metric_sqrt=s, route="jacobian")._chunks
    close(stored.values.flatten(2), torch.cat([c[2] for c in own]))


def test_a_last_block_module_before_the_keys_turns_the_shortcut_off(tiny):
    kind, model, ids, s = tiny
    if kind == "gpt2":
        pytest.skip("GPT-2 projects queries, keys and values in one module (c_attn), which this test splits")
    # The last block's value projection reaches the output at every position, through the key-value cache.
    module = "model.layers.1.self_attn.v_proj"
    stored = stored_jacobians(model, ids, [module, lm.module_roles(model)["mlp_out"][1]], -1, s)
    assert stored[module].keep.tolist() == list(range(T))
    _operator_products_match_brute_force(model, ids, module, -1, s, stored[module])


def test_a_stored_jacobian_that_does_not_fit_the_operator_one_line(tiny):
    _, model, ids, s = tiny
    module = lm.module_roles(model)["mlp_out"][0]
    stored = stored_jacobians(model, ids, [module], -1, s)[module]
    cases = [
        (dict(jacobian=stored, route="matrix_free"), "for the jacobian route"),
        (dict(jacobian=lm.StoredJacobian(stored.values[1:], stored.keep)), "has shape"),
        (dict(jacobian=lm.StoredJacobian(stored.values[:, :, :2], torch.tensor([5, 9]))), "keeps positions"),
        (dict(jacobian=lm.StoredJacobian(stored.values.float(), stored.keep)), "move it with"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            lm.ModuleOperator(model, ids, module, metric_sqrt=s, **kwargs)
    with pytest.raises(ValueError, match="no module named 'model.nowhere'"):
        next(lm.downstream_jacobians(model, ids, ["model.nowhere"], metric_sqrt=s))


def test_lanczos_on_a_known_spectrum():
    # Fifty steps on a diagonal operator with a decaying spectrum recover its top eigenvalues.
    diag = torch.logspace(0, -6, 400, dtype=torch.float64)
    vals, vecs = lm.lanczos(lambda v: diag[:, None] * v, 400, k=5, dtype=torch.float64)
    torch.testing.assert_close(vals, diag[:5], rtol=1e-8, atol=0)
    assert (vecs[:5].abs().diagonal() > 1 - 1e-6).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"module": "model.layers.9.mlp"}, "no module named"),
        ({"module": "model.norm"}, "neither inside a decoder block nor the input embedding"),
        ({"position": 7}, "outside contexts of 7 tokens"),
        ({"ids": torch.full((2, 3), 50)}, "model's vocabulary"),
        ({"ids": torch.zeros(2, 17, dtype=torch.long)}, "longer than the model's 16 positions"),
        ({"ids": torch.zeros(2, 3)}, "integer tensor"),
    ],
)
def test_bad_input_one_line(kwargs, message):
    model = lm.load_causal_lm(_configs()["gemma"])
    args = {"ids": torch.zeros(2, 7, dtype=torch.long), "module": "model.layers.0.mlp.down_proj", **kwargs}
    with pytest.raises(ValueError, match=message):
        lm.module_operator(model, **args)


# --- inputs from a user's directory ---


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Gemma-3 saved with a word-level tokenizer, as a user's checkpoint directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = tmp_path_factory.mktemp("gemma")
    torch.manual_seed(0)
    model = lm.load_causal_lm(_configs()["gemma"])
    model.save_pretrained(path)
    words = ["<pad>", "<unk>"] + [f"w{i}" for i in range(48)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>").save_pretrained(
        path
    )
    return model, path


def test_saved_then_loaded_directory_gives_the_same_spectrum(saved):
    model, path = saved
    loaded = lm.load_causal_lm(path)
    assert loaded.config._attn_implementation == "eager"
    assert next(loaded.parameters()).dtype == torch.float32
    ids = torch.randint(1, 50, (N, T), generator=torch.Generator().manual_seed(5))
    spectra = []
    for m in (model, loaded):
        u = lm.unembedding(m)
        op = lm.module_operator(m, ids, lm.module_for(m, "mlp_out", 1), metric_sqrt=lm.metric_sqrt(u.T @ u))
        spectra.append(op.eigenpairs(4)[0])
    torch.testing.assert_close(spectra[0], spectra[1])


def test_contexts_from_text_with_the_model_tokenizer(saved, tmp_path):
    _, path = saved
    text = tmp_path / "story.txt"
    text.write_text(" ".join(f"w{i % 48}" for i in range(23)) + "\n")
    ids = lm.contexts_from_text(text, lm.load_tokenizer(path), context_length=5)
    # Word wi has id i + 2; 23 words make 4 whole contexts of 5, no BOS.
    expected = torch.tensor([i % 48 + 2 for i in range(20)]).reshape(4, 5)
    assert torch.equal(ids, expected)
    with pytest.raises(ValueError, match="4 context"):
        lm.contexts_from_text(text, lm.load_tokenizer(path), context_length=5, n_contexts=6)


def test_token_ids_and_labels_from_files(tmp_path):
    ids = torch.randint(0, 50, (4, 6))
    np_path = tmp_path / "ids.npy"
    import numpy as np

    np.save(np_path, ids.numpy())
    assert torch.equal(lm.load_token_ids(np_path), ids)
    (tmp_path / "labels.txt").write_text("NOUN\nVERB\nDET\nNOUN\n")
    assert list(lm.load_labels(tmp_path / "labels.txt", 4)) == ["NOUN", "VERB", "DET", "NOUN"]
    with pytest.raises(ValueError, match="one per context needed"):
        lm.load_labels(tmp_path / "labels.txt", 5)
    np.save(tmp_path / "float.npy", np.zeros((4, 6)))
    with pytest.raises(ValueError, match="must be integers"):
        lm.load_token_ids(tmp_path / "float.npy")


def test_bad_directories_one_line(tmp_path, saved):
    with pytest.raises(ValueError, match="no config.json"):
        lm.load_causal_lm(tmp_path)
    transformers.T5Config(d_model=8, num_layers=1, num_heads=1, d_kv=4, d_ff=8, vocab_size=10).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a causal language model"):
        lm.load_causal_lm(tmp_path)
    model, path = saved
    with pytest.raises(ValueError, match="has no tokenizer"):
        lm.load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="no module of role 'experts'"):
        lm.module_for(model, "experts")
    sdpa = lm.load_causal_lm(path)
    sdpa.config._attn_implementation = "sdpa"
    with pytest.raises(ValueError, match="forward-mode AD"):
        lm.module_operator(sdpa, torch.zeros(1, 3, dtype=torch.long), "model.layers.0.mlp.down_proj")


def test_the_solver_basis_leaves_room_for_what_the_operator_holds(tiny):
    _, model, ids, s = tiny
    op = lm.ModuleOperator(model, ids, lm.module_roles(model)["mlp_out"][0], metric_sqrt=s, max_memory_gb=1)
    k = 2
    b = default_block_size(k, op.dim)
    assert op.dim > 4 * b  # room for the largest basis, 4b, when nothing else is held
    op._held = 0
    assert op._max_basis(op.dim, k) == 4 * b
    op._held = op._budget  # a stored Jacobian that takes the whole budget leaves the smallest basis
    assert op._max_basis(op.dim, k) == 2 * b
