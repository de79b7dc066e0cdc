"""Language-model views (docs/spec.md §4): the context builder's rules on a planted model, the
per-module operator against a brute-force Jacobian, and the bad inputs each named."""

import types

import numpy as np
import pytest
import torch
from torch import nn

from entk import lm
from entk import shared as wf
from entk.kinds import story_lm
from entk.kinds.registry import get_kind
from entk.pipeline import lm_views

CLASSES = ["NOUN", "PUNCT"]


class Planted(nn.Module):
    """Greedy next word: "ball" (NOUN) after a determiner, else "." (PUNCT)."""

    def __init__(self):
        super().__init__()
        vocab = story_lm.vocabulary()
        self.det = torch.tensor([vocab[w] for w in ("the", "a", "this", "that", "every", "some")])
        self.noun, self.punct, self.size = vocab["ball"], vocab["."], len(vocab)

    def forward(self, input_ids):
        last = input_ids[:, -1]
        best = torch.where(torch.isin(last, self.det), self.noun, self.punct)
        logits = nn.functional.one_hot(best, self.size).float()[:, None].expand(-1, input_ids.shape[1], -1)
        return types.SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def corpus():
    return story_lm.corpus(get_kind("story_lm").with_defaults({"probe_stories": 400}), 0, "planted")


def test_contexts_follow_the_authors_rules(corpus):
    tok, length = story_lm.tokenizer(), 12
    out = lm_views.build_contexts(Planted(), tok, corpus, CLASSES, 10, length, seed=0)
    words = {i: w for w, i in tok.get_vocab().items()}
    assert out["ids"].shape == (20, length)
    assert np.bincount(out["labels"]).tolist() == [10, 10]
    assert len(set(out["story"].tolist())) == 20  # one target per story
    for ids, label, s, i, greedy in zip(
        out["ids"], out["labels"], out["story"], out["word"], out["greedy"], strict=True
    ):
        words_s, tags_s = corpus[s]
        assert i >= length and [words[t] for t in ids] == words_s[i - length : i]
        assert tags_s[i] == CLASSES[label]
        # The planted model's greedy word, recomputed here, has the target's class.
        det = tags_s[i - 1] == "DET"
        assert greedy == ("ball" if det else ".") and (det == (CLASSES[label] == "NOUN"))


def test_contexts_too_few_or_too_short_are_named(corpus):
    tok = story_lm.tokenizer()
    with pytest.raises(ValueError, match="too few contexts.*NOUN"):
        lm_views.build_contexts(Planted(), tok, corpus[:30], CLASSES, 50, 12, seed=0)
    with pytest.raises(ValueError, match="shorter than asked"):
        lm_views.build_contexts(Planted(), tok, corpus[:30], CLASSES, 5, 500, seed=0)


@pytest.fixture(scope="module")
def tiny():
    s = get_kind("story_lm").with_defaults(
        {"d_model": 8, "n_layers": 2, "n_heads": 2, "d_mlp": 16, "context_length": 6}
    )
    model = story_lm.seeded_build(s, torch.Generator().manual_seed(1)).double().eval()
    ids = torch.randint(3, len(story_lm.vocabulary()), (6, 5), generator=torch.Generator().manual_seed(2))
    return model, ids


def brute_force_kernel(model, ids, module, root):
    """K = S^½ J Jᵀ S^½ from ``torch.func.jacrev`` of the final normed hidden state (class-major rows)."""
    params = {n: p.detach() for n, p in model.named_parameters() if n.startswith(module + ".")}

    def out(p):
        h = torch.func.functional_call(model.model, {k.removeprefix("model."): v for k, v in p.items()}, (ids,))
        return (h.last_hidden_state[:, -1] @ root).T.reshape(-1)

    jac = torch.func.jacrev(out)(params)
    j = torch.cat([v.reshape(v.shape[0], -1) for v in jac.values()], 1)
    return (j @ j.T).detach()


@pytest.mark.parametrize("module", ["mlp_out.1", "attn_out.0", "embedding.0"])
def test_module_eigen_matches_a_dense_kernel(tiny, module):
    model, ids = tiny
    metric = lm_views.output_metric(model, "unembedding")
    out = lm_views.module_eigen(
        model, ids, module, metric, position=-1, top_k=4, lanczos_steps=48, max_memory_gb=None, log=lambda m: None
    )
    name = lm_views.resolve_module(model, module)
    kernel = brute_force_kernel(model, ids, name, lm.metric_sqrt(metric))
    vals, vecs = torch.linalg.eigh(kernel)
    top, top_vecs = vals.flip(0)[:4].numpy(), vecs.flip(1)[:, :4].numpy()
    assert out["values"] == pytest.approx(top, rel=1e-6)
    assert out["lanczos_values"] == pytest.approx(top, rel=1e-6)
    assert lm_views.subspace_overlap(out["vectors"].astype(float), top_vecs) == pytest.approx(1, abs=1e-4)
    assert float(out["overlap"]) == pytest.approx(1, abs=1e-4)


def test_stored_jacobians_give_the_dense_kernels_spectrum(tiny, tmp_path):
    model, ids = tiny
    metric = lm_views.output_metric(model, "unembedding")
    specs = ["embedding.0", "attn_out.0", "mlp_out.1"]
    # D̃ in float64: 6 contexts × C = 8 × positions × 8 outputs, the last block's MLP at the output's position
    # alone (3 kB), the others at all 5 (15 kB). A budget whose 60 % holds 6 kB stores the first only; the
    # others are left to their own operators.
    stored = lm_views.store_jacobians(
        model, ids, specs, metric, tmp_path / "jac", position=-1, max_memory_gb=1e4 / 2**30, log=lambda m: None
    )
    assert stored == ["mlp_out.1"]
    root = lm.metric_sqrt(metric)
    for spec in specs:
        jacobian = lm_views.load_jacobian(tmp_path / "jac", spec, like=root)
        assert (jacobian is not None) == (spec in stored)
        out = lm_views.module_eigen(
            model,
            ids,
            spec,
            metric,
            position=-1,
            top_k=4,
            lanczos_steps=48,
            max_memory_gb=None,
            jacobian=jacobian,
            log=lambda m: None,
        )
        kernel = brute_force_kernel(model, ids, lm_views.resolve_module(model, spec), root)
        vals, vecs = torch.linalg.eigh(kernel)
        assert out["values"] == pytest.approx(vals.flip(0)[:4].numpy(), rel=1e-6)
        overlap = lm_views.subspace_overlap(out["vectors"].astype(float), vecs.flip(1)[:, :4].numpy())
        assert overlap == pytest.approx(1, abs=1e-4)


def test_a_stream_of_the_wrong_size_leaves_no_file(tmp_path):
    path = tmp_path / "d.npy"
    with pytest.raises(ValueError, match="needs 96"), wf.npy_writer(path, (3, 4), "float64") as fh:
        fh.write(np.ones(5).tobytes())
    assert list(tmp_path.iterdir()) == []
    with wf.npy_writer(path, (3, 4), "float64") as fh:
        for row in np.arange(12.0).reshape(3, 4):
            fh.write(row.tobytes())
    assert np.array_equal(np.load(path), np.arange(12.0).reshape(3, 4))


def test_hidden_states_end_in_the_final_normed_state(tiny):
    model, ids = tiny
    hidden = lm_views.last_hidden_states(model, ids)
    assert hidden.shape == (3, 6, 8)
    with torch.no_grad():
        final = lm.FinalHidden(model)(ids)
    assert hidden[-1] == pytest.approx(final.numpy())


def test_bad_modules_and_metrics_are_named(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(ValueError, match="2 module"):
        lm_views.resolve_module(model, "mlp_out.2")
    with pytest.raises(ValueError, match="matches no module"):
        lm_views.resolve_module(model, "model.layers.0.mlp.nothing")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.eye(3))
    with pytest.raises(ValueError, match=r"need \(8, 8\)"):
        lm_views.output_metric(model, str(wrong))
    negative = tmp_path / "negative.npy"
    np.save(negative, -np.eye(8))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        lm_views.output_metric(model, str(negative))
    asym = tmp_path / "asym.npy"
    np.save(asym, np.triu(np.ones((8, 8))))
    with pytest.raises(ValueError, match="not symmetric"):
        lm_views.output_metric(model, str(asym))
