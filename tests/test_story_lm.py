"""The story_lm kind (docs/spec.md §4): an ordinary Hugging Face checkpoint, a word-level tokenizer,
parameter names known before training, and training that resumes bit-identically."""

import pytest
import torch

from entk import lm
from entk.kinds import stories as grammar
from entk.kinds import story_lm
from entk.kinds.registry import get_kind

TINY = {
    "d_model": 16,
    "n_layers": 2,
    "n_heads": 2,
    "d_mlp": 32,
    "context_length": 8,
    "steps": 4,
    "batch_size": 4,
    "checkpoint_every": 2,
    "train_stories": 20,
    "test_stories": 5,
    "probe_stories": 5,
}


def settings(**over):
    return get_kind("story_lm").with_defaults({**TINY, **over})


def test_parameter_names_match_the_built_model():
    s = settings()
    assert get_kind("story_lm").parameters(s) == [n for n, _ in story_lm.build(s).named_parameters()]


def test_tokenizer_gives_one_token_per_word():
    tok = story_lm.tokenizer()
    words = list(grammar.VOCABULARY)
    ids = tok(" ".join(words), add_special_tokens=False)["input_ids"]
    assert ids == [story_lm.vocabulary()[w] for w in words]
    assert len(set(ids)) == len(words)


def test_checkpoint_directory_round_trip(tmp_path):
    s = settings()
    model = story_lm.seeded_build(s, torch.Generator().manual_seed(0)).eval()
    story_lm.save_pretrained(model, str(tmp_path))
    loaded = lm.load_causal_lm(tmp_path)
    ids = torch.randint(0, len(story_lm.vocabulary()), (3, 8))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert torch.equal(lm.unembedding(loaded), loaded.get_input_embeddings().weight)


def test_training_resumes_bit_identically():
    s = settings()
    saved = {}
    history = story_lm.train(
        s, 0, "t", checkpoint_steps=[0, 2, 4], save_checkpoint=saved.__setitem__, log=lambda m: None
    )
    assert history["step"].tolist() == [0, 2, 4] and history["test_loss"].notna().all()
    again = {}
    resumed = story_lm.train(
        s, 0, "t", checkpoint_steps=[0, 2, 4], save_checkpoint=again.__setitem__, resume=saved[2], log=lambda m: None
    )
    assert list(again) == [4]
    for name, tensor in saved[4]["model"].items():
        assert torch.equal(tensor, again[4]["model"][name]), name
    assert resumed.equals(history)


def test_bad_settings_are_named():
    msgs = get_kind("story_lm").check(settings(n_heads=3, lr=0))
    assert any("'lr'" in m for m in msgs)
    assert get_kind("story_lm").check(settings(n_heads=3)) == [
        "setting 'n_heads' of kind story_lm: d_model = 16 is not divisible by 3 heads; choose n_heads dividing d_model"
    ]
    with pytest.raises(ValueError, match="n_heads"):
        story_lm.train(settings(n_heads=3), 0, "t")
