"""The kind hf_causal_lm (a Hugging Face causal LM of the user's): its entries resolved into the
language-model rules' wiring, each bad input refused with one line naming the problem and the fix
(at parse time where the files allow it), its contexts picked from the user's files, and a config's
random weights drawn from the experiment's seed."""

import copy
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from entk import lm
from entk.kinds import hf_lm
from entk.kinds.registry import get_kind
from entk.pipeline.config import ConfigError, check_config

transformers = pytest.importorskip("transformers")

SCHEMA = ROOT / "schemas" / "config.schema.yaml"
WORDS = ["the", "a", "dog", "cat", "saw", "took", "."]
TAGS = {"the": "DET", "a": "DET", "dog": "NOUN", "cat": "NOUN", "saw": "VERB", "took": "VERB", ".": "PUNCT"}
LLAMA = {
    "model_type": "llama",
    "vocab_size": 10,
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 6,
}


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two checkpoints of a tiny Llama with a tokenizer, a T5 directory, token ids, text and labels."""
    root = tmp_path_factory.mktemp("hf")
    given = dict(LLAMA)
    config = transformers.AutoConfig.for_model(given.pop("model_type"), **given)
    for step in (0, 10):
        torch.manual_seed(step)
        lm.load_causal_lm(config).save_pretrained(root / f"step_{step}")
        tokenizer().save_pretrained(root / f"step_{step}")
    lm.load_causal_lm(config).save_pretrained(root / "no_tokenizer")
    transformers.T5Config(d_model=8, num_layers=1, num_heads=1, d_kv=4, d_ff=8, vocab_size=10).save_pretrained(
        root / "t5"
    )
    (root / "empty").mkdir()
    rng = np.random.default_rng(0)
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), 5 * 40 + 1)]
    ids = np.asarray([WORDS.index(w) + 2 for w in words[:200]]).reshape(40, 5)
    np.save(root / "tokens.npy", ids)
    np.save(root / "long.npy", np.zeros((4, 7), dtype=np.int64))
    # The label of context i: the tag of the word after it.
    (root / "labels.txt").write_text("".join(f"{TAGS[words[5 * (i + 1)]]}\n" for i in range(40)))
    (root / "short_labels.txt").write_text("NOUN\nVERB\n")
    (root / "text.txt").write_text(" ".join(words[:200]) + "\n")
    return root


def drop_none(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if v is not None}


def config(**settings) -> dict:
    lm_entry = settings.pop("lm", {})
    base = {"model": ["step_0", "step_10"], "steps": [0, 10], "tokens": "tokens.npy", "labels": "labels.txt"}
    entry = {
        "classes": ["DET", "NOUN", "VERB", "PUNCT"],
        "per_class": 2,
        "context_length": 5,
        "top_k": 3,
        "lanczos_steps": 6,
        **lm_entry,
    }
    return {
        "seed": 0,
        "experiments": {"mine": {"kind": "hf_causal_lm", "settings": drop_none({**base, **settings})}},
        "language_models": {"mine": entry},
    }


def resolved(files, cfg):
    from entk.pipeline.lm_config import resolve

    experiments = check_config(copy.deepcopy(cfg), SCHEMA, str(files))
    return resolve(cfg, experiments, str(files))[0]["mine"]


def test_directories_are_the_training_axis(files):
    lm_ = resolved(files, config(lm={"over_training": True}))
    assert lm_.directories == {0: "step_0", 10: "step_10"}
    assert lm_.steps == {"trained": 10, "init": 0}
    assert lm_.states == ["trained", "init"] and lm_.training == ["init", "trained"]
    assert lm_.modules == ["mlp_out.0", "mlp_out.1", "attn_out.0", "attn_out.1", "embedding.0"]
    assert lm_.directory(10) == "step_10" and lm_.settings["dtype"] == "float32"
    assert lm_.init_modules == lm_.modules
    few = resolved(files, config(lm={"over_training": True, "init_modules": ["mlp_out"]}))
    assert few.modules_at("trained") == lm_.modules and few.modules_at("init") == ["mlp_out.0", "mlp_out.1"]

    one = resolved(files, config(model="step_10", steps=None, text="text.txt", tokens=None))
    assert one.states == ["trained"] and one.directories == {0: "step_10"}

    random_weights = resolved(files, config(model=None, steps=None, config=LLAMA))
    assert random_weights.directories == {} and random_weights.directory(0) == "results/mine/hf/step_0"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"model": ["empty", "step_10"]}, r"settings': setting 'model': .*empty has no config.json"),
        ({"model": ["t5", "step_10"]}, r"model_type 't5' is not a causal language model"),
        ({"model": None, "steps": None, "config": {"model_type": "t5"}}, r"'config': model_type 't5' is not a causal"),
        ({"model": None, "steps": None, "config": {"model_type": "nonsense"}}, r"setting 'config': .*give model_type"),
        ({"tokens": None, "text": "text.txt", "model": "no_tokenizer", "steps": None}, r"needs the model's tokenizer"),
        ({"labels": "short_labels.txt"}, r"setting 'labels': .*2 labels .* one per context needed \(40\)"),
        ({"tokens": "long.npy"}, r"contexts of 7 tokens are longer than the model's 6 positions"),
        ({"tokens": None, "text": "text.txt", "lm": {"context_length": 7}}, r"7 tokens are longer than .* 6 positions"),
        ({"tokens": "nowhere.npy"}, r"setting 'tokens': nowhere.npy does not exist"),
        ({"n_contexts": 50}, r"setting 'n_contexts': 50 contexts asked, tokens.npy holds 40"),
        ({"config": LLAMA}, r"give exactly one of model .* or config"),
        ({"steps": [0]}, r"setting 'steps' of kind hf_causal_lm: 1 steps for 2 model directories"),
        ({"steps": [10, 0]}, r"\[10, 0\] must increase"),
        ({"text": "text.txt"}, r"give exactly one of tokens .* or text"),
        ({"tokenizer": "step_0"}, r"only a text input is tokenized"),
        ({"model": "step_10", "steps": None, "lm": {"over_training": True}}, r"over_training'.*one checkpoint"),
    ],
)
def test_bad_entries_one_line_at_parse_time(files, settings, message):
    cfg = config(**settings)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, SCHEMA, str(files))


def test_an_experiment_without_its_language_models_entry(files):
    cfg = config()
    del cfg["language_models"]
    with pytest.raises(ConfigError, match=r"'experiments.mine': .*add an entry language_models: \{mine: \{\}\}"):
        check_config(cfg, SCHEMA, str(files))


def lm_settings(**given) -> dict:
    from entk.pipeline.lm_config import defaults

    return {**defaults(), "classes": ["DET", "NOUN", "VERB", "PUNCT"], "per_class": 2, "context_length": 5, **given}


def test_contexts_are_the_labelled_rows_of_the_files(files, monkeypatch):
    monkeypatch.chdir(files)
    settings = get_kind("hf_causal_lm").with_defaults(
        {"model": "step_10", "tokens": "tokens.npy", "labels": "labels.txt"}
    )
    out = hf_lm.contexts(settings, lm_settings(), "step_10", ["mlp_out.1", "embedding.0"], "here")
    labels = (files / "labels.txt").read_text().split()
    # Independently: the first two rows of each class, in file order.
    rows = [i for i, y in enumerate(labels) if labels[: i + 1].count(y) <= 2]
    assert out["index"].tolist() == rows
    np.testing.assert_array_equal(out["ids"], np.load(files / "tokens.npy")[rows])
    assert [out["classes"][y] for y in out["labels"]] == [labels[i] for i in rows]

    text = get_kind("hf_causal_lm").with_defaults({"model": "step_10", "text": "text.txt", "labels": "labels.txt"})
    from_text = hf_lm.contexts(text, lm_settings(), "step_10", ["mlp_out.0"], "here")
    np.testing.assert_array_equal(from_text["ids"], out["ids"])


def test_contexts_refuse_what_only_the_model_shows(files, monkeypatch):
    monkeypatch.chdir(files)
    settings = get_kind("hf_causal_lm").with_defaults(
        {"model": "step_10", "tokens": "tokens.npy", "labels": "labels.txt"}
    )
    with pytest.raises(ValueError, match=r"class ADV has 0 sample\(s\).* drop it from the classes"):
        hf_lm.contexts(settings, lm_settings(classes=["DET", "ADV"]), "step_10", ["mlp_out.0"], "here")
    with pytest.raises(
        ValueError, match=r"here: LlamaForCausalLM has 2 module\(s\) of role mlp_out, so mlp_out.2 does"
    ):
        hf_lm.contexts(settings, lm_settings(), "step_10", ["mlp_out.2"], "here")
    with pytest.raises(ValueError, match=r"'model.layers.0.mlp' is no module with parameters of LlamaForCausalLM"):
        hf_lm.contexts(settings, lm_settings(), "step_10", ["model.layers.0.mlp"], "here")


def test_a_role_the_architecture_does_not_have():
    mamba = lm.load_causal_lm(
        transformers.MambaConfig(vocab_size=20, hidden_size=8, state_size=4, num_hidden_layers=2, expand=2)
    )
    with pytest.raises(ValueError, match=r"has 0 module\(s\) of role attn_out.*its roles are \['embedding'\]"):
        hf_lm.check_modules(mamba, ["embedding.0", "attn_out.0"], "modules")


def test_random_weights_come_from_the_seed_and_key(tmp_path):
    settings = get_kind("hf_causal_lm").with_defaults({"config": LLAMA, "tokens": "t.npy", "labels": "l.txt"})
    saved = {}

    def run(seed, key):
        hf_lm.train(settings, seed, key, save_checkpoint=lambda step, state: saved.update({(seed, key): state}))
        return saved[(seed, key)]["model"]

    a, b, c = run(0, "mine"), run(0, "mine"), run(0, "other")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["model.layers.0.mlp.down_proj.weight"], c["model.layers.0.mlp.down_proj.weight"])
    model = hf_lm.build(settings)
    model.load_state_dict(a)
    hf_lm.save_pretrained(model, str(tmp_path / "saved"))
    loaded = lm.load_causal_lm(tmp_path / "saved")
    ids = torch.tensor([[2, 3, 4, 5]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_the_workflow_saves_a_configs_random_weights_and_reads_directories_in_place(files, tmp_path):
    """Dry run: a config's model is drawn (train) and saved (lm_export) before its contexts; a directory
    model's jobs read the user's directory of each state, and nothing exports it."""
    work = tmp_path / "work"
    shutil.copytree(files, work)
    cfg = config(lm={"modules": ["mlp_out.1"]})
    cfg["experiments"]["rand"] = {
        "kind": "hf_causal_lm",
        "settings": {"config": LLAMA, "tokens": "tokens.npy", "labels": "labels.txt"},
    }
    cfg["language_models"]["rand"] = cfg["language_models"]["mine"]
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    (work / "Snakefile").write_text(
        f'configfile: "config.yaml"\n\n\nmodule entk:\n    snakefile:\n        "{ROOT / "Snakefile"}"\n'
        "    config:\n        config\n\n\nuse rule * from entk\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--printshellcmds", "--quiet", "rules"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    plan = run.stdout + run.stderr
    for rule, count in (("train", 1), ("lm_export", 1), ("lm_contexts", 2), ("lm_eigen", 3), ("lm_detectors", 3)):
        assert re.search(rf"^{rule}\s+{count}$", plan, re.M), (rule, count, plan)
