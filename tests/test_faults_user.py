"""Faults and bad input, round 2 (issue 22): a user's own model, files and memory. Each case ends in
one message that names the problem and the fix — before any training where the problem is knowable
at the start — and what real models legitimately hold (a −inf attention mask, a forward returning a
tuple or a mapping, numpy scalars in a recipe's history) keeps working."""

import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from torch.func import functional_call, jacrev

from conftest import ROOT
from entk import NTK, top_eigenpairs
from entk import shared as wf
from entk.analyses.analysis import EigenFile, cliffs_table, localisation_table, phase_table
from entk.core import memory
from entk.core.eigen import kernel_eigenpairs
from entk.pipeline import runner
from entk.pipeline.config import ConfigError, check_config, settle_config
from entk.pipeline.experiments import Untracked

SCHEMA = ROOT / "schemas" / "config.schema.yaml"
F64 = torch.float64


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)


def x_probe(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=F64)


def brute_force_ntk(fn, params: dict, x: torch.Tensor) -> torch.Tensor:
    """J Jᵀ (C·N, C·N) class-major of x → fn(params, x) (N, C) by torch.func, independent of entk."""
    jac = jacrev(fn)(params, x)
    n, c = x.shape[0], jac[next(iter(jac))].shape[1]
    j = torch.cat([t.reshape(n, c, -1) for t in jac.values()], dim=2).transpose(0, 1).reshape(c * n, -1)
    return j @ j.T


# --- 1. No torch file runs code when it is loaded ---


class Planted:
    """What a hostile pickle does: call a function of its choosing (here: create a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_resume_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    store = wf.ResumableCheckpoints({0: None, 3: None}, tmp_path / "resume", {"seed": 0})
    (tmp_path / "resume").mkdir()
    torch.save({"model": {}, "meta": {"seed": 0}, "x": Planted(marker)}, tmp_path / "resume" / "epoch3.pt")
    with pytest.raises(wf.UnreadableFileError, match=r"epoch3.pt holds Python objects .*not loaded.*delete .*resume"):
        store.latest()
    with pytest.raises(wf.UnreadableFileError, match="not loaded"):
        store.load(3)
    with pytest.raises(ValueError, match="weights_only must be True"):
        wf.load_torch(tmp_path / "resume" / "epoch3.pt", weights_only=False)
    assert not marker.exists()


def test_a_recipe_state_is_checked_as_it_is_saved_and_numpy_scalars_load(tmp_path):
    store = wf.ResumableCheckpoints({0: None, 1: None}, tmp_path / "resume", {"seed": 0})
    # numpy scalars in a history (e.g. from np.mean) are plain values: saved and resumed from.
    history = [{"step": 0, "loss": np.float64(0.5), "n": np.int64(3), "acc": np.float32(0.25)}]
    store.save(0, {"model": {"w": torch.ones(2)}, "history": history})
    assert store.load(0)["history"] == history
    model = nn.Linear(2, 1)
    # An object only code could rebuild is refused when saved, not when a resume meets it.
    with pytest.raises(ValueError, match=r"state saved at step 1 holds Python objects .*torch.optim"):
        store.save(1, {"model": model.state_dict(), "opt": torch.optim.SGD(model.parameters(), lr=0.1)})
    assert not (tmp_path / "resume" / "epoch1.pt").exists()


# --- 9. A whole pickled model given as a checkpoint ---


def test_a_whole_pickled_model_is_named_with_what_to_save(tmp_path):
    torch.save(mlp(), tmp_path / "whole.pt")
    states = runner.checkpoint_states([str(tmp_path / "whole.pt")], [0])
    with pytest.raises(wf.UnreadableFileError, match=r"whole pickled model.*torch.save\(model.state_dict\(\)") as err:
        next(states)
    assert "rerun snakemake" not in str(err.value)


# --- 2, 3. Names that leave results/, and the order of a glob ---

USER = """
import torch
from torch import nn

def build(width=4):
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))

def inputs():
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
"""


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text(USER)
    (tmp_path / "ckpt").mkdir()
    for step in (1, 2, 10):
        torch.save(
            nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).state_dict(), tmp_path / f"ckpt/step_{step}.pt"
        )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def user_config(exp_id: str = "u", **entry) -> dict:
    base = {"model": "model.py:build", "inputs": "model.py:inputs", "weights": {"checkpoints": "ckpt/*.pt"}}
    return {"seed": 0, "experiments": {exp_id: {**base, **entry}}}


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
@pytest.mark.parametrize("where", ["experiment", "view"])
def test_names_that_would_leave_results_are_refused(user_dir, name, where):
    cfg = user_config(name) if where == "experiment" else user_config(views={name: {}})
    with pytest.raises(ConfigError, match=r"may not start with '\.'"):
        check_config(cfg, SCHEMA, str(user_dir))


def test_a_glob_is_ordered_with_numbers_as_numbers(user_dir):
    exp = check_config(user_config(weights={"checkpoints": "ckpt/step_*.pt", "steps": [1, 2, 10]}), SCHEMA, ".")["u"]
    assert exp.checkpoint_files == ["ckpt/step_1.pt", "ckpt/step_2.pt", "ckpt/step_10.pt"]


# --- 4, 10. What real models hold and return ---


class Masked(nn.Module):
    """A causal self-attention layer whose mask buffer is −inf above the diagonal, as PyTorch writes it."""

    def __init__(self, t: int = 3, d: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.qkv, self.out = nn.Linear(d, 3 * d).to(F64), nn.Linear(t * d, 2).to(F64)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(t, dtype=F64))
        self.register_buffer("count", torch.tensor(7))  # an integer buffer

    def forward(self, x):  # x (N, T, d) -> (N, 2)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(1, 2) + self.mask, dim=-1)
        return self.out((a @ v).flatten(1))


def test_an_attention_mask_buffer_is_accepted_and_nan_buffers_are_not():
    model, x = Masked(), torch.randn(5, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    params = {k: v.detach() for k, v in model.named_parameters()}
    want = brute_force_ntk(lambda p, x: functional_call(model, p, (x,)), params, x)
    torch.testing.assert_close(NTK(model, x).kernel().dense(), want)
    model.mask[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"not finite: buffer 'mask'"):
        NTK(model, x)


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x), x.sum()


class DictOut(TupleOut):
    def forward(self, x):
        return {"hidden": x, "logits": self.net(x)}


@pytest.mark.parametrize("cls", [TupleOut, DictOut])
def test_a_tuple_or_mapping_output_is_analysed_at_its_first_element_or_logits(cls):
    model, x = cls(), x_probe()
    params = {k: v.detach() for k, v in model.named_parameters()}
    want = brute_force_ntk(lambda p, x: functional_call(model.net, {k[4:]: v for k, v in p.items()}, (x,)), params, x)
    ntk = NTK(model, x, groups={"first": ["net.0"]})
    torch.testing.assert_close(ntk.kernel().dense(), want)
    assert ntk.names == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    model.train()
    top_eigenpairs(model, x, 2, method="matrix_free")
    assert model.training and model.net.training  # modes come back as they were


def test_an_output_without_a_tensor_to_analyse_says_so():
    class Strings(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2).to(F64)

        def forward(self, x):
            return {"hidden": self.lin(x)}

    with pytest.raises(ValueError, match=r"returns a mapping with keys \['hidden'\].*wrap the model"):
        NTK(Strings(), x_probe())


def test_nan_outputs_name_the_samples():
    class Sqrt(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x) * x[:, :1].sqrt()

    x = x_probe().abs()
    x[[1, 4], 0] = -1.0
    with pytest.raises(ValueError, match=r"outputs are NaN or infinite for samples 1, 4 \(of N = 6\)"):
        NTK(Sqrt(), x)


def unusable(kind: str) -> nn.Module:
    if kind == "meta":
        with torch.device("meta"):
            return nn.Linear(3, 2)
    if kind == "none":
        return nn.Tanh()
    return nn.Linear(3, 2).to({"float16": torch.float16, "bfloat16": torch.bfloat16, "complex": torch.complex64}[kind])


@pytest.mark.parametrize(
    "kind, message",
    [
        ("meta", r"on the meta device .*to_empty"),
        ("float16", r"torch.float16\) .*model.float\(\)"),
        ("bfloat16", r"torch.bfloat16\) .*model.float\(\)"),
        ("complex", r"torch.complex64\) .*model.float\(\)"),
        ("none", r"has no parameters"),
    ],
)
def test_models_whose_ntk_cannot_be_computed_say_why(kind, message):
    with pytest.raises(ValueError, match=message):
        top_eigenpairs(unusable(kind), x_probe().float(), 1)


def test_k_must_be_a_whole_number():
    kernel = NTK(mlp(), x_probe()).kernel()
    with pytest.raises(ValueError, match="k must be a whole number of eigenpairs, got 2.5"):
        kernel_eigenpairs(kernel, 2.5)
    with pytest.raises(ValueError, match="whole number"):
        NTK(mlp(), x_probe()).eigenpairs(True)
    assert kernel_eigenpairs(kernel, np.int64(2))[0].shape == (2,)


def test_output_weights_must_be_nonnegative_and_not_all_zero(bad_dir):
    with pytest.raises(ValueError, match=r"every output weight is zero"):
        NTK(mlp(), x_probe(), output_weights=torch.tensor([0.0, 0.0]))
    for weights in ([-1.0, 1.0], [0.0, 0.0]):
        with pytest.raises(ConfigError, match=r"output_weights"):
            check_config(
                user_config(output_weights=weights, weights={"train": "model.py:train", "steps": [0]}), SCHEMA, "."
            )
    np.save(bad_dir / "negative.npy", np.array([1.0, -2.0]))
    with pytest.raises(
        ValueError, match=r"'experiments.u.views.v.output_weights': weights of outputs \[1\] are negative"
    ):
        train_job(GOOD, {"v": {"output_weights": "negative.npy"}})
    assert not (bad_dir / "recipe_called").exists()


# --- 5. Memory: the budget and the plan against the machine ---


def test_budgets_that_are_not_numbers_or_exceed_the_machine_are_refused(monkeypatch):
    monkeypatch.setenv("ENTK_MAX_MEMORY_GB", "abc")
    with pytest.raises(ValueError, match=r"\$ENTK_MAX_MEMORY_GB='abc' is not a number"):
        NTK(mlp(), x_probe())
    monkeypatch.delenv("ENTK_MAX_MEMORY_GB")
    with pytest.raises(ValueError, match="positive and finite"):
        NTK(mlp(), x_probe(), max_memory_gb=float("inf"))
    with pytest.raises(ValueError, match=r"max_memory_gb = 1e\+06 GB .*exceeds this machine's memory"):
        NTK(mlp(), x_probe(), max_memory_gb=1e6)


def test_a_plan_that_cannot_fit_the_machine_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory_gb", lambda device=None: 1e-4)  # a 100 kB machine
    ntk = NTK(mlp(), x_probe(400), max_memory_gb=1e-5)
    with pytest.raises(MemoryError, match=r"top 2 eigenpairs by dense .*needs about .* machine's 0.0 GB"):
        ntk.eigenpairs(2, method="dense")
    assert ntk._atom_kernels == {}  # nothing was computed
    with pytest.raises(MemoryError, match=r"the kernels of \d+ parameter\(s\) \(dim 800\)"):
        ntk.kernel()


# --- 10. A group whose parameters do not change the outputs ---


def test_a_zero_spectrum_has_no_cliffs_while_the_other_groups_go_on():
    lam = np.array([[9.0, 8.5, 8.0, 0.01, 0.009, 0.008, 0.007], [9.0, 8.6, 8.1, 0.011, 0.009, 0.008, 0.006]])
    vectors = np.linalg.qr(np.random.default_rng(0).normal(size=(10, 7)))[0]
    eig = EigenFile(
        np.array([0, 5]),
        ["full", "used", "unused"],
        {"full": lam, "used": lam, "unused": np.zeros_like(lam)},
        {g: np.stack([vectors, vectors]) for g in ("full", "used", "unused")},
        {"full": ["a", "b"], "used": ["a"], "unused": ["b"]},
        np.zeros((10, 3)),
        "diag_mean",
        2,
        10,
    )
    rule = lambda values: [SimpleNamespace(position=3, ratio=800.0, score=20.0)]  # noqa: E731
    cliffs = cliffs_table(eig, find_cliffs=rule)
    assert set(cliffs["layer"]) == {"full", "used"}
    assert set(localisation_table(eig, find_cliffs=rule)["layer"]) == {"used"}
    assert set(phase_table(eig, find_cliffs=rule)["layer"]) == {"full", "used"}


# --- 8, 10 and the recipe contract: the train job checks before training ---

BAD_USER = """
import numpy as np
import pandas as pd
import torch
from pathlib import Path
from torch import nn

def build(width=4):
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))

def raises():
    raise RuntimeError("boom in my code")

def not_a_model():
    return 3

def frozen(width=4):
    model = build(width)
    model[0].bias.requires_grad_(False)
    return model

def inputs():
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(1))

def int_inputs():
    return torch.arange(18).reshape(6, 3)

def wide_inputs():
    return torch.randn(6, 5)

def nan_inputs():
    x = inputs()
    x[2, 0] = float("nan")
    return x

def empty_inputs():
    return torch.zeros(0, 3)

def train(settings, seed, key, *, device, checkpoint_steps, save_checkpoint, resume=None, log=print):
    Path("recipe_called").write_text(str(resume is not None))
    mode = settings.get("mode", "good")
    torch.manual_seed(seed)
    model = build()
    rows = []
    for step in checkpoint_steps:
        rows.append({"step": step, "loss": np.float64(1.0 / (step + 1))})
        state = {"model": model.state_dict(), "step": step, "history": list(rows)}
        if mode == "other_step":
            save_checkpoint(step + 1, state)
        elif mode == "no_model":
            save_checkpoint(step, {"weights": model.state_dict()})
        elif mode == "wrong_model":
            save_checkpoint(step, {"model": nn.Linear(3, 2).state_dict()})
        elif mode != "never":
            save_checkpoint(step, state)
        if mode == "crash" and step == 3:
            raise RuntimeError("crash after step 3")
    return None if mode == "none" else pd.DataFrame(rows)
"""


@pytest.fixture
def bad_dir(tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text(BAD_USER)
    torch.save({"x": torch.zeros(6, 3)}, tmp_path / "dict.pt")
    np.save(tmp_path / "labels.npy", np.array([0, 1, 2, 3, 0, 1]))
    np.save(tmp_path / "short.npy", np.array([0, 1, 2, 3, 0]))
    np.save(tmp_path / "one_class.npy", np.zeros(6, dtype=np.int64))
    np.save(tmp_path / "nan.npy", np.full((6, 2), np.nan))
    np.save(tmp_path / "three_weights.npy", np.ones(3))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train_job(entry: dict, views: dict | None = None) -> Path:
    """Run scripts/train.py as Snakemake runs it, on one experiment entry; returns the job's folder."""
    cfg = {"seed": 0, "experiments": {"u": {"weights": {"train": "model.py:train", "steps": [0, 3, 6]}, **entry}}}
    if views:
        cfg["experiments"]["u"]["views"] = views
    exp = check_config(cfg, SCHEMA, ".")["u"]
    # Each job is a fresh process that imports the user's files anew.
    for name in [m for m in sys.modules if m.startswith("entk_user_")]:
        del sys.modules[name]
    sm = SimpleNamespace(
        log=["logs/train.log"],
        threads=1,
        params=SimpleNamespace(
            exp=exp.params(), views=Untracked([v.params() for v in exp.views.values()]), device="cpu"
        ),
        output=SimpleNamespace(checkpoints="results/u/checkpoints.pt", history="results/u/history.csv"),
    )
    runpy.run_path(str(ROOT / "scripts" / "train.py"), init_globals={"snakemake": sm})
    return Path("results/u")


GOOD = {"model": "model.py:build", "inputs": "model.py:inputs"}
BEFORE_TRAINING = [
    (
        {"model": "model.py:raises"},
        None,
        r"'experiments.u.model': model.py:raises raised RuntimeError: boom in my code",
    ),
    ({"model": "model.py:not_a_model"}, None, r"'experiments.u.model': model.py:not_a_model returned int"),
    ({"inputs": "model.py:int_inputs"}, None, r"'experiments.u.model': .*fails on the first probe input .*torch.int64"),
    (
        {"inputs": "model.py:wide_inputs"},
        None,
        r"fails on the first probe input of model.py:wide_inputs \(shape \(1, 5\)",
    ),
    ({"inputs": "model.py:nan_inputs"}, None, r"'experiments.u.inputs': model.py:nan_inputs: x has NaN .* rows 2"),
    ({"inputs": "model.py:empty_inputs"}, None, r"'experiments.u.inputs': model.py:empty_inputs: need a tensor"),
    ({"inputs": "dict.pt"}, None, r"'experiments.u.inputs': dict.pt holds a dict \(keys \['x'\]\)"),
    (
        {},
        {"v": {"features": "short.npy"}},
        r"'experiments.u.views.v.features': short.npy: need one row per probe input",
    ),
    ({}, {"v": {"features": "nan.npy"}}, r"'experiments.u.views.v.features': nan.npy: holds NaN"),
    ({}, {"v": {"features": "one_class.npy"}}, r"one_class.npy: every label is 0 \(one class\)"),
    ({}, {"v": {"output_weights": "three_weights.npy"}}, r"'experiments.u.views.v.output_weights': .*need 2 weights"),
    ({}, {"v": {"position": 0}}, r"'experiments.u.views.v': position: 0 is set but the model's output is \(1, 2\)"),
]


@pytest.mark.parametrize("entry, views, message", BEFORE_TRAINING)
def test_input_problems_stop_the_train_job_before_training(bad_dir, entry, views, message):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message):
        train_job({**GOOD, **entry}, views)
    assert not (bad_dir / "recipe_called").exists()


CONTRACT = [
    ("never", r"returned without saving the checkpoints of steps \[0, 3, 6\]"),
    ("other_step", r"saved a checkpoint at step 1, which is not one of its steps \[0, 3, 6\]"),
    ("no_model", r"saved a dict with keys \['weights'\] at step 0; save a dict holding the model's weights"),
    ("wrong_model", r"saved at step 0 a 'model' state that does not fit .*missing keys"),
    ("none", r"returned NoneType; return the training history"),
]


@pytest.mark.parametrize("mode, message", CONTRACT)
def test_the_recipe_contract_is_checked_as_it_runs(bad_dir, mode, message):
    with pytest.raises(ValueError, match=message):
        train_job({**GOOD, "settings": {"mode": mode}})
    assert not (bad_dir / "results" / "u" / "checkpoints.pt").exists()


def test_top_k_cut_and_frozen_parameters_are_stated_in_the_log(bad_dir):
    out = train_job(
        {"model": "model.py:frozen", "inputs": "model.py:inputs", "features": "labels.npy"},
        {"v": {"top_k": 50, "layers": {"first": ["0"]}}},
    )
    log = Path("logs/train.log").read_text()
    assert "top_k = 50 exceeds the kernel's dimension 6: keeping all 6" in log
    assert "layer group 'first': includes frozen parameter(s) ['0.bias']" in log
    bundle = torch.load(out / "checkpoints.pt", weights_only=True)
    assert bundle["steps"] == [0, 3, 6] and pd.read_csv(out / "history.csv")["step"].tolist() == [0, 3, 6]


# --- 6. A killed training run resumes only if its code is unchanged ---


def test_a_recipe_changed_after_a_crash_starts_over(bad_dir):
    with pytest.raises(RuntimeError, match="crash after step 3"):
        train_job({**GOOD, "settings": {"mode": "crash"}})
    assert sorted(p.name for p in (bad_dir / "results/u/resume").iterdir()) == ["epoch0.pt", "epoch3.pt"]
    # Unchanged code resumes ...
    with pytest.raises(RuntimeError, match="crash after step 3"):
        train_job({**GOOD, "settings": {"mode": "crash"}})
    assert (bad_dir / "recipe_called").read_text() == "True"
    # ... a fixed recipe starts over, saying why.
    source = (bad_dir / "model.py").read_text()
    (bad_dir / "model.py").write_text(source.replace('raise RuntimeError("crash after step 3")', "pass"))
    train_job({**GOOD, "settings": {"mode": "crash"}})
    assert (bad_dir / "recipe_called").read_text() == "False"
    assert "written with other settings; starting over (changed: ['code'])" in Path("logs/train.log").read_text()
    assert not (bad_dir / "results/u/resume").exists()


def test_the_code_digest_follows_the_files_of_model_and_recipe(bad_dir):
    from entk.pipeline import preflight
    from entk.pipeline.experiments import Experiment

    params = {"id": "u", "kind": None, "model": "model.py:build", "settings": {}, "inputs": "x.npy", "seed": 0}
    params |= {"seed_key": "u", "dtype": "float64", "max_memory_gb": None, "steps": [0]}
    exp = Experiment.from_params({**params, "weights": {"train": "model.py:train", "steps": [0]}})
    before = preflight.code_digest(exp)
    (bad_dir / "model.py").write_text(BAD_USER + "\n# lr fixed\n")
    assert preflight.code_digest(exp) != before
    kind = Experiment.from_params({**params, "kind": "tms", "model": None, "weights": "train"})
    assert preflight.code_digest(kind) == preflight.code_digest(kind)


# --- The config: experiments as a list, and YAML errors of --configfile ---


def test_experiments_written_as_a_list_are_named_with_file_and_line(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("seed: 0\n\nexperiments:\n  - model: model.py:build\n    inputs: model.py:inputs\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: 'experiments' is a list, not a map of experiment ids"):
        settle_config(yaml.safe_load(path.read_text()), [path], {}, SCHEMA)
    with pytest.raises(ConfigError, match="'experiments' is a list, not a map"):
        check_config(yaml.safe_load(path.read_text()), SCHEMA, str(tmp_path))


def test_config_files_can_be_checked_before_snakemake_reads_them(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nexperiments:\n  u: {model: model.py:build\n")
    done = subprocess.run(
        [sys.executable, "-m", "entk.pipeline.config", str(bad)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 1 and f"{bad}:4:1: YAML syntax error" in done.stderr


# --- 7. ./run.sh resume acts on the folder it is called from ---

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


def fake_entk(path: Path) -> Path:
    """A clone of entk with its run.sh and a .venv whose set-up is stubbed out (no pip, no network)."""
    venv = path / ".venv" / "bin"
    venv.mkdir(parents=True)
    shutil.copy(ROOT / "run.sh", path / "run.sh")
    (venv / "python").write_text("#!/bin/sh\nexit 0\n")
    (venv / "python").chmod(0o755)
    (venv / "snakemake").symlink_to(os.path.join(os.path.dirname(sys.executable), "snakemake"))
    return path / "run.sh"


def test_resume_from_a_users_folder_acts_on_that_folder(tmp_path):
    run_sh, mine = fake_entk(tmp_path / "entk"), tmp_path / "mine"
    mine.mkdir()
    env = {**os.environ, "PYTHON": sys.executable}
    nowhere = subprocess.run([run_sh, "resume"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert nowhere.returncode == 1 and "no Snakefile in" in nowhere.stderr
    (mine / "Snakefile").write_text(KILLABLE)
    (mine / "slow").touch()
    snakemake = tmp_path / "entk" / ".venv" / "bin" / "snakemake"
    run = subprocess.Popen([snakemake, "--cores", "1", "-q"], cwd=mine, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (mine / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    (mine / "slow").unlink()
    assert any((mine / ".snakemake" / "locks").iterdir())
    done = subprocess.run([run_sh, "resume", "--cores", "1", "-q"], cwd=mine, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (mine / "b.txt").read_text() == "whole\n"
    locks = mine / ".snakemake" / "locks"
    assert not locks.exists() or not any(locks.iterdir())
    assert not (tmp_path / "entk" / ".snakemake").exists()


def test_no_torch_load_in_the_code_unpickles_code():
    """Every torch file the library and scripts read goes through load_torch (weights_only=True)."""
    for path in [*ROOT.glob("src/entk/**/*.py"), *ROOT.glob("scripts/*.py")]:
        text = path.read_text()
        assert "weights_only=False" not in text, path
        if path.name != "shared.py":
            assert "torch.load(" not in text, f"{path}: read torch files with entk.shared.load_torch"


def test_the_views_the_train_job_checks_do_not_rerun_it():
    """Snakemake records builtin params only (persistence._serialize_param_builtin): a view's change must
    rerun its eigen job, not the training."""
    from snakemake.persistence import UNREPRESENTABLE, PersistenceBase

    views = Untracked([{"name": "v", "top_k": 3}])
    assert PersistenceBase._serialize_param_builtin(None, views) is UNREPRESENTABLE
    assert "views=experiment_views" in (ROOT / "rules" / "train.smk").read_text()
