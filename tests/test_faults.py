"""Faults and bad input: each gives a clear message (or a documented, harmless behaviour), never NaN,
a bare failure deep inside torch, a stale lock, a stale file or different bytes for the same run."""

import copy
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.func import functional_call, jacrev

from conftest import ROOT
from entk import compact_ntk, empirical_ntk, layer_ntks, layerwise_ntk, top_eigenpairs
from entk import shared as wf
from entk.core.matfree import factor_matvec, ntk_matvec, param_matvec, products
from entk.pipeline.config import ConfigError, coerce_numbers, config_errors, load_yaml_strict, replace_sections

pytestmark = pytest.mark.usefixtures("float64")


def mlp(*middle: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), *middle, nn.Tanh(), nn.Linear(6, 2))


def x_probe(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(1))


def eye_product(fn, n):
    """Apply a product V -> K V (or U -> F U) to the identity, so every entry point yields a tensor."""
    return fn(torch.eye(n))


# Every public entry point, as model, x -> something computed from the model on x.
ENTRIES = {
    "compact_ntk": lambda m, x: compact_ntk(m, x).dense(),
    "empirical_ntk": lambda m, x: empirical_ntk(m, x, outputs="diag_mean"),
    "layer_ntks": lambda m, x: layer_ntks(m, x, {"first": ["0"], "all": None})["all"].dense(),
    "layerwise_ntk": lambda m, x: sum(layerwise_ntk(m, x).values()),
    "top_eigenpairs": lambda m, x: top_eigenpairs(m, x, 3, outputs="diag_mean")[0],
    "top_eigenpairs_matrix_free": lambda m, x: top_eigenpairs(m, x, 3, method="matrix_free", tol=1e-10)[0],
    "ntk_matvec": lambda m, x: eye_product(ntk_matvec(products(m, x)), 2 * x.shape[0]),
    "param_matvec": lambda m, x: eye_product(param_matvec(products(m, x)), 38),
    "factor_matvec": lambda m, x: eye_product(factor_matvec(products(m, x)), 38),
}


@pytest.mark.parametrize("entry", ENTRIES)
def test_nonfinite_weights_are_named(entry):
    model = mlp()
    with torch.no_grad():
        model[2].bias[1] = float("nan")
    with pytest.raises(ValueError, match=r"not finite: parameter '2\.bias'"):
        ENTRIES[entry](model, x_probe())


@pytest.mark.parametrize("entry", ENTRIES)
def test_nonfinite_input_rows_are_named(entry):
    x = x_probe()
    x[3, 0], x[6, 2] = float("inf"), float("nan")
    with pytest.raises(ValueError, match=r"x has NaN or infinite entries in rows 3, 6 \(of N = 8\)"):
        ENTRIES[entry](mlp(), x)


@pytest.mark.parametrize("entry", ENTRIES)
def test_empty_inputs_say_so(entry):
    with pytest.raises(ValueError, match="x has no samples"):
        ENTRIES[entry](mlp(), x_probe()[:0])


def test_nonfinite_buffer_and_many_rows():
    model = mlp(nn.BatchNorm1d(6))
    model[1].running_var[0] = float("nan")
    with pytest.raises(ValueError, match=r"buffer '1\.running_var'"):
        empirical_ntk(model, x_probe())
    x = torch.full((9, 3), float("nan"))
    with pytest.raises(ValueError, match=r"rows 0, 1, 2, 3, 4, … \(9 in all\)"):
        empirical_ntk(mlp(), x)


def reference_ntk(model, x):
    """J Jᵀ (C·N, C·N) class-major from autograd on an eval-mode copy: independent of entk."""
    ref = copy.deepcopy(model).eval()
    params = {k: v.detach() for k, v in ref.named_parameters()}
    jac = jacrev(lambda p: functional_call(ref, p, (x,)))(params)
    j = torch.cat([t.reshape(x.shape[0], 2, -1) for t in jac.values()], dim=2)
    j = j.transpose(0, 1).reshape(2 * x.shape[0], -1)
    return j @ j.T


@pytest.mark.parametrize("entry", ["compact_ntk", "layerwise_ntk", "top_eigenpairs_matrix_free", "ntk_matvec"])
@pytest.mark.parametrize("layer", ["dropout", "batchnorm"])
def test_training_mode_kernel_is_the_eval_kernel_and_the_model_is_unchanged(entry, layer):
    # A BatchNorm with non-trivial running statistics, so its eval and train kernels differ.
    middle = nn.Dropout(0.5) if layer == "dropout" else nn.BatchNorm1d(6)
    model = mlp(middle)
    if layer == "batchnorm":
        middle.running_mean.uniform_(-1, 1)
        middle.running_var.uniform_(0.5, 2)
        middle.num_batches_tracked += 3
    model.train()
    model[0].eval()  # mixed modes must come back as they were
    modes = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x = x_probe()
    first, second = ENTRIES[entry](model, x), ENTRIES[entry](model, x)
    assert torch.equal(first, second)
    want = reference_ntk(model, x)
    if entry == "top_eigenpairs_matrix_free":
        want = torch.linalg.eigvalsh(want).flip(0)[:3]
    torch.testing.assert_close(first, want)
    assert [m.training for m in model.modules()] == modes
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k


# --- Outputs: ordinary permissions, no stale temps, the same bytes for the same content ---


def fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1, 3])
    return figure


def _write_csv(p):
    with wf.atomic_path(p) as tmp:
        tmp.write_text("a\n1\n")


WRITERS = {
    "npz": lambda p: wf.save_npz(p, a=np.arange(3)),
    "pt": lambda p: wf.save_torch(p, {"a": torch.arange(3)}),
    "pdf": lambda p: wf.save_figure(fig(), [p]),
    "png": lambda p: wf.save_figure(fig(), [p]),
    "csv": _write_csv,
}


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["022", "002"])
@pytest.mark.parametrize("suffix", WRITERS)
def test_outputs_respect_the_umask(tmp_path, suffix, umask):
    old = os.umask(umask)
    try:
        WRITERS[suffix](tmp_path / f"out.{suffix}")
    finally:
        os.umask(old)
    assert (tmp_path / f"out.{suffix}").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_killed_write_leaves_no_temp_for_good(tmp_path):
    # What a kill during savefig leaves: an empty hidden temp beside the target.
    target = tmp_path / "fig.pdf"
    killed = wf.atomic_path(target)
    stale = killed.__enter__()  # never left: the job died inside savefig
    assert stale.exists()
    others = [tmp_path / ".fig.pdf.pdf.tmp-0123abcd.pdf", tmp_path / ".other.pdf.tmp-0123abcd.pdf"]
    for o in others:
        o.write_bytes(b"")
    wf.save_figure(fig(), [target])
    assert not stale.exists()
    assert sorted(tmp_path.iterdir()) == sorted([target, *others])


@pytest.mark.parametrize("suffix", ["pt", "npz", "pdf", "png", "svg"])
def test_the_same_content_gives_the_same_bytes(tmp_path, suffix, monkeypatch):
    write = WRITERS.get(suffix, lambda p: wf.save_figure(fig(), [p]))
    write(tmp_path / f"one.{suffix}")
    # A later date must not show (PDF and SVG take their creation date from here when it is set).
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(time.time()) + 86400 * 400))
    write(tmp_path / "sub" / f"two.{suffix}")
    assert (tmp_path / f"one.{suffix}").read_bytes() == (tmp_path / "sub" / f"two.{suffix}").read_bytes()


# --- Inputs of later jobs: a truncated or corrupt file is named, with the fix ---


def cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_checkpoint_is_named_with_the_fix(tmp_path, damage):
    path = tmp_path / "checkpoints" / "epoch40.pt"
    wf.save_torch(path, {"model": {"w": torch.ones(50, 50)}})
    {"truncated": lambda: cut(path), "garbage": lambda: path.write_bytes(b"\0" * 999), "empty": lambda: cut(path, 0)}[
        damage
    ]()
    msg = f"{path} is not a readable checkpoint \\(truncated or corrupt: .*\\); delete it and rerun snakemake"
    with pytest.raises(wf.UnreadableFileError, match=msg):
        wf.load_torch(path, what="checkpoint")


def test_npz_reader_checks_bytes_keys_and_shapes(tmp_path):
    path = tmp_path / "eigen.npz"
    wf.save_npz(path, steps=np.arange(4), **{"values/all": np.ones((4, 3))})
    got = wf.load_npz(path, required=["steps", "values/all"], shapes={"values/all": (None, 3)}, what="eigen file")
    assert sorted(got) == ["steps", "values/all"] and np.array_equal(got["steps"], np.arange(4))
    with pytest.raises(wf.UnreadableFileError, match=r"eigen.npz is not a readable eigen file \(no arrays \['groups"):
        wf.load_npz(path, required=["steps", "groups"], what="eigen file")
    with pytest.raises(wf.UnreadableFileError, match=r"'values/all' has shape \(4, 3\), expected \('any', 5\)"):
        wf.load_npz(path, shapes={"values/all": (None, 5)}, what="eigen file")
    cut(path, 0.6)
    with pytest.raises(wf.UnreadableFileError, match=rf"{path} is not a readable kernel file \(truncated or corrupt"):
        wf.load_npz(path, what="kernel file")
    with pytest.raises(wf.UnreadableFileError, match=r"missing\.npz: the kernel file is missing"):
        wf.load_npz(tmp_path / "missing.npz", what="kernel file")


def history_csv(path, epochs):
    import pandas as pd

    pd.DataFrame({"epoch": epochs, "train_loss": np.linspace(1, 0, len(epochs))}).to_csv(path, index=False)


def test_truncated_history_is_refused_with_the_missing_epochs(tmp_path):
    path = tmp_path / "history.csv"
    history_csv(path, list(range(61)))
    table = wf.read_table(path, columns=["epoch", "train_loss"], what="training history")
    wf.check_history(table, range(61), path)
    history_csv(path, list(range(11)))  # a run that stopped after 11 of 61 epochs
    table = wf.read_table(path, columns=["epoch"], what="training history")
    with pytest.raises(
        wf.UnreadableFileError,
        match=r"history.csv is not a readable training history \(truncated: "
        r"no rows for 50 of 61 epochs \(11, 12, .*, 20, …\)\); delete it and rerun",
    ):
        wf.check_history(table, range(61), path)
    cut(path, 0.5)  # cut mid-line
    with pytest.raises(wf.UnreadableFileError, match=r"truncated: the last line is cut off"):
        wf.read_table(path, what="training history")
    with pytest.raises(wf.UnreadableFileError, match=r"no columns \['test_loss'\]"):
        history_csv(path, [0, 1])
        wf.read_table(path, columns=["test_loss"], what="training history")


# --- Config loading: YAML's near-misses, duplicate keys, syntax errors, sections a one-off config replaces ---

SCHEMA = {
    "type": "object",
    "$defs": {"count": {"type": "integer", "minimum": 1}},
    "properties": {
        "epochs": {"$ref": "#/$defs/count"},
        "lr": {"type": "number"},
        "name": {"type": "string"},
        "flag": {"type": "boolean"},
        "half": {"type": "integer"},
        "steps": {"type": "array", "items": {"type": "integer"}},
        "window": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "integer"}]},
        "layers": {"oneOf": [{"type": "string", "enum": ["all"]}, {"type": "array", "items": {"type": "integer"}}]},
        "top_k": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "grid": {"type": "object", "additionalProperties": {"properties": {"m": {"type": "integer"}}}},
        "seeds": {"type": "object", "patternProperties": {"^s": {"type": "integer"}}},
    },
}


def test_coerce_numbers_follows_the_schema():
    raw = yaml.safe_load(
        """
epochs: 60.0
lr: 1e-3
name: 1e3
flag: true
half: 60.5
steps: [40.0, 1e2, 7]
window: [1e-2, 3.0]
layers: all
top_k: 5.0
grid: {a: {m: 2.0, other: 2.0}}
seeds: {s1: 3.0, t1: 3.0}
"""
    )
    assert raw["lr"] == "1e-3" and raw["name"] == "1e3"  # what PyYAML does
    got = coerce_numbers(raw, SCHEMA)
    assert got == {
        "epochs": 60, "lr": 0.001, "name": "1e3", "flag": True, "half": 60.5, "steps": [40, 100, 7],
        "window": [0.01, 3], "layers": "all", "top_k": 5, "grid": {"a": {"m": 2, "other": 2.0}},
        "seeds": {"s1": 3, "t1": 3.0},
    }  # fmt: skip
    assert [type(v) for v in got["steps"]] == [int, int, int] and type(got["epochs"]) is int
    assert raw["epochs"] == 60.0 and type(raw["epochs"]) is float  # a copy, the input untouched
    # What cannot be made an integer is left for the schema check, which names the key.
    assert config_errors(got, {**SCHEMA, "properties": {"half": {"type": "integer"}}}) == [
        "config key 'half': 60.5 is not of type 'integer'"
    ]
    assert coerce_numbers({"layers": [1.0, 2.0]}, SCHEMA) == {"layers": [1, 2]}


def test_duplicate_keys_are_named_with_file_and_line(tmp_path):
    path = tmp_path / "one_off.yaml"
    path.write_text("mlp:\n  p: 13\n  hidden: 8\n  p: 11\nseed: 0\n")
    assert yaml.safe_load(path.read_text())["mlp"]["p"] == 11  # PyYAML: the last one wins, silently
    with pytest.raises(
        ConfigError,
        match=rf"{path}: duplicate config keys:\n  - line 4: key 'mlp.p' given twice "
        r"\(first at line 2\)",
    ):
        load_yaml_strict(path)
    path.write_text("experiments:\n  a: {kind: tms}\n  b: {kind: tms}\n")
    assert load_yaml_strict(path) == {"experiments": {"a": {"kind": "tms"}, "b": {"kind": "tms"}}}
    path.write_text("")
    assert load_yaml_strict(path) == {}


@pytest.mark.parametrize(
    "text, where",
    [("seed: 0\nmlp:\n  p: 13\n hidden: 8\n", ":4:2"), ("seed: [0, 1\nmlp: {}\n", ":2:"), ("seed: 'a\n", ":2:1")],
)
def test_yaml_syntax_errors_give_file_line_and_column(tmp_path, text, where):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{path}{where}.*YAML syntax error"):
        load_yaml_strict(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must be a mapping of keys to values, not a list"):
        load_yaml_strict(path)


def test_a_later_file_replaces_a_section_instead_of_merging(tmp_path):
    base, one_off = tmp_path / "config.yaml", tmp_path / "one_off.yaml"
    base.write_text("seed: 0\nexperiments:\n  tms: {kind: tms, settings: {steps: 10}}\n  mlp: {kind: modadd_mlp}\n")
    one_off.write_text("experiments:\n  small: {kind: tms, settings: {lr: 0.1}}\n")
    # What Snakemake's map-by-map merge gives: the one-off config cannot drop tms or mlp.
    merged = yaml.safe_load(base.read_text())
    merged["experiments"].update(yaml.safe_load(one_off.read_text())["experiments"])
    config = replace_sections(copy.deepcopy(merged), [base, one_off])
    assert config == {"seed": 0, "experiments": {"small": {"kind": "tms", "settings": {"lr": 0.1}}}}
    overrides = {"experiments": {"small": {"settings": {"seed_offset": 1}}}}
    config = replace_sections(copy.deepcopy(merged), [base, one_off], overrides=overrides)
    assert config["experiments"] == {"small": {"kind": "tms", "settings": {"lr": 0.1, "seed_offset": 1}}}
    # Files that do not define the section leave the merged value alone.
    one_off.write_text("seed: 3\n")
    assert replace_sections(copy.deepcopy(merged), [one_off]) == merged


# --- Workflow runs: a run killed with kill -9 resumes with one command ---

KILLABLE = """
rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    shell: "echo half > {output}; if [ -e slow ]; then touch started; sleep 60; fi; echo whole > {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "cp {input} {output}"
"""


def test_resume_after_kill_9(tmp_path):
    # A copy of run.sh beside a throwaway Snakefile, with set-up stubbed out (no pip, no network).
    shutil.copy(ROOT / "run.sh", tmp_path / "run.sh")
    (tmp_path / "Snakefile").write_text(KILLABLE)
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("#!/bin/sh\nexit 0\n")
    (venv / "python").chmod(0o755)
    (venv / "snakemake").symlink_to(os.path.join(os.path.dirname(sys.executable), "snakemake"))
    (tmp_path / "slow").touch()
    run = subprocess.Popen([venv / "snakemake", "--cores", "1", "-q"], cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    env = {**os.environ, "PYTHON": sys.executable}
    resume = ["./run.sh", "resume", "--cores", "1", "-q"]
    # While the run is alive, unlocking would let two runs write the same files: refused.
    early = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert early.returncode == 1 and f"process {run.pid} still runs snakemake here" in early.stderr
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    (tmp_path / "slow").unlink()
    assert (tmp_path / "a.txt").read_text() == "half\n" and any((tmp_path / ".snakemake" / "locks").iterdir())
    done = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b.txt").read_text() == "whole\n"
