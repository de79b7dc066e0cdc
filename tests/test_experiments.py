"""Experiments as data: config entries resolve into experiments and views, bad entries are named
with their key, and the runner computes a view's eigen file for a user's own model exactly."""

import copy

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.func import functional_call, jacrev, vmap

from conftest import ROOT
from entk.analyses.analysis import load_eigen
from entk.pipeline import runner
from entk.pipeline.config import ConfigError, check_config
from entk.pipeline.experiments import Experiment, View

SCHEMA = ROOT / "schemas" / "config.schema.yaml"


def shipped() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def job_experiment(**given) -> Experiment:
    """An experiment as a job gets it, from the given params over a model of the user's."""
    params = {"id": "u", "kind": None, "model": "model.py:build", "settings": {}, "weights": "train", "inputs": "kind"}
    params |= {"seed": 0, "seed_key": "u", "dtype": "float64", "max_memory_gb": None, "steps": [0]}
    return Experiment.from_params(params | given)


def test_shipped_config_resolves_every_experiment():
    exps = check_config(shipped(), SCHEMA, str(ROOT))
    paper = {"m10_S0.3", "m10_S0.9", "m40_S0.9", "mlp", "transformer"}
    seeds = {f"{e}_seeds/seed{s}" for e in paper for s in range(5)}  # the seed study's units
    assert set(exps) == paper | {"mlp_p113"} | seeds | {"stories", "stories_s1", "stories_s2"}
    assert exps["transformer"].steps == list(range(0, 4001, 20)) and exps["transformer"].views["tensors"].steps == [
        4000
    ]
    assert exps["mlp"].steps == list(range(0, 501, 10))
    assert exps["m10_S0.3"].steps == [5000] and exps["mlp_p113"].steps == [0, 800]
    assert exps["mlp_p113"].views["diag"].steps == [800] and not exps["mlp_p113"].default
    assert exps["mlp"].settings["hidden"] == 512 and exps["m40_S0.9"].settings["n_features"] == 50
    assert exps["m10_S0.9"].views["beta0.3"].output_weights == {"importance": 0.3}
    assert exps["mlp_p113"].seed_key == "mlp" and exps["mlp"].seed_key == "mlp"


USER = """
import torch
from torch import nn

def build(width=4):
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))

def seq(width=4):
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))

def inputs():
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(1))

def not_a_model():
    return 3
"""


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text(USER)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def user_config(**entry) -> dict:
    base = {"model": "model.py:build", "inputs": "model.py:inputs", "weights": {"checkpoints": "ckpt/*.pt"}}
    return {"seed": 0, "experiments": {"u": {**base, **entry}}}


BAD = [
    ({"kind": "resnet", "model": None}, r"give exactly one of kind"),
    ({"model": "missing.py:build"}, r"'experiments.u.model': missing.py does not exist"),
    ({"inputs": "kind"}, r"a model of your own needs inputs"),
    ({"weights": "train"}, r"has no training recipe"),
    ({"weights": {"checkpoints": "nothing/*.pt"}}, r"no file matches 'nothing/\*.pt'"),
    ({"weights": {"checkpoints": "ckpt/*.pt", "steps": [1]}}, r"1 steps for 2 checkpoint files"),
    ({"views": {"v": {"checkpoints": [7]}}}, r"'experiments.u.views.v.checkpoints': steps \[7\] have no checkpoint"),
    ({"views": {"v": {"output_weights": {"importance": 1}}}}, r"needs a kind with output importances"),
    ({"views": {"v": {"layers": "per_layer"}}}, r"'experiments.u.views.v.layers'"),
    ({"views": {"v": {"outputs": "trace"}}}, r"'experiments.u.views.v.outputs': 'trace' is not one of"),
]


@pytest.mark.parametrize("entry, message", BAD)
def test_bad_experiment_entries_are_named(user_dir, entry, message):
    (user_dir / "ckpt").mkdir()
    for i in range(2):
        torch.save({}, user_dir / "ckpt" / f"s{i}.pt")
    if entry.get("kind") == "resnet":
        cfg = user_config(kind="resnet")
    else:
        cfg = user_config(**entry)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, SCHEMA, str(user_dir))


KIND_BAD = [
    ("m10_S0.3", {"sparsity": 1.0}, r"sparsity"),
    ("m10_S0.3", {"m": 0}, r"'experiments.m10_S0.3.settings.m': 0 is less than the minimum of 1"),
    ("m10_S0.3", {"hiden": 3}, r"unknown config key 'hiden' under 'experiments.m10_S0.3.settings'"),
    ("mlp", {"p": 13, "train_fraction": 0.001}, r"gives 0 training pairs; raise or lower it"),
    ("mlp", {"hidden": 1_000_000_000}, r"GiB per activation; use fewer units"),
    ("mlp", {"epochs": "many"}, r"'experiments.mlp.settings.epochs': 'many' is not of type 'integer'"),
]


@pytest.mark.parametrize("exp, settings, message", KIND_BAD)
def test_bad_kind_settings_are_named_at_parse_time(exp, settings, message):
    cfg = shipped()
    cfg["experiments"][exp]["settings"].update(settings)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, SCHEMA, str(ROOT))


def test_paper_section_must_name_existing_experiments_and_views():
    cfg = shipped()
    cfg["paper"]["modadd"]["view"] = "nope"
    with pytest.raises(ConfigError, match=r"'paper.modadd': experiment 'mlp' has no view\(s\) \['nope'\]"):
        check_config(cfg, SCHEMA, str(ROOT))
    cfg = shipped()
    cfg["paper"]["modadd"]["fig5_epochs"] = [45]
    with pytest.raises(ConfigError, match=r"'paper.modadd.fig5_epochs': epochs \[45\] have no analysed checkpoint"):
        check_config(cfg, SCHEMA, str(ROOT))


def test_user_functions_errors_name_file_and_function(user_dir):
    with pytest.raises(AttributeError, match=r"model.py has no function 'nope'"):
        runner.load_function("model.py:nope", "model")
    exp = job_experiment(model="model.py:not_a_model")
    with pytest.raises(TypeError, match="returned int, not a torch.nn.Module"):
        runner.build_model(exp)


def test_view_groups_and_positions(user_dir):
    model = runner.build_model(job_experiment(settings={"width": 5}))
    assert model[0].out_features == 5  # settings reach the user's function as keyword arguments
    assert runner.view_groups(model, "per_tensor") == {n: [n] for n in ("0.weight", "0.bias", "2.weight", "2.bias")}
    assert runner.view_groups(model, "per_module") == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
    assert runner.view_groups(model, "all") == {"full": None}
    with pytest.raises(ValueError, match="layer group 'x'.*unknown parameter or module name 'nope'"):
        runner.view_groups(model, {"x": ["nope"]})
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"position: 0 is set but the model's output is \(1, 2\)"):
        runner.positioned(model, x, 0)

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):  # (N, T, 3) -> (N, T, 2)
            return self.lin(x)

    seq = Seq()
    xs = torch.randn(4, 5, 3)
    with pytest.raises(ValueError, match=r"needs position:"):
        runner.positioned(seq, xs, None)
    wrapped, prefix = runner.positioned(seq, xs, -1)
    assert prefix == "net." and torch.equal(wrapped(xs), seq(xs)[:, -1])
    assert runner.view_groups(wrapped, "per_tensor", prefix) == {
        "lin.weight": ["net.lin.weight"],
        "lin.bias": ["net.lin.bias"],
    }


def test_checkpoint_that_does_not_fit_lists_the_keys(user_dir):
    model = runner.build_model(job_experiment())
    state = {k: v for k, v in model.state_dict().items() if k != "2.bias"}
    state["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \['2.bias'\], unexpected keys \['extra'\]"):
        runner.load_state(model, state, "ckpt/s0.pt")


def brute_force_kernel(model: nn.Module, x: torch.Tensor, names: list[str] | None, outputs: str) -> torch.Tensor:
    """K from per-sample Jacobians by torch.func (independent of entk's kernel code)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    chosen = [k for k in params if names is None or k in names]

    def f(p, xi):
        return functional_call(model, {**params, **p}, (xi[None],))[0]

    jac = vmap(jacrev(f), in_dims=(None, 0))({k: params[k] for k in chosen}, x)
    j = torch.cat([jac[k].reshape(x.shape[0], -1, params[k].numel()) for k in chosen], dim=2)  # (N, C, P)
    n, c, _ = j.shape
    if outputs == "flatten":
        jf = j.permute(1, 0, 2).reshape(c * n, -1)
        return jf @ jf.T
    if outputs == "diag_mean":
        return torch.einsum("ncp,mcp->nm", j, j) / c
    jm = j.mean(1)
    return jm @ jm.T


@pytest.mark.parametrize("outputs", ["flatten", "diag_mean", "all_mean"])
def test_eigen_file_of_user_checkpoints_matches_brute_force(user_dir, outputs):
    torch.manual_seed(0)
    (user_dir / "ckpt").mkdir()
    models = []
    for step in (3, 9):
        m = runner.build_model(job_experiment()).double()
        torch.save({"model": m.state_dict()}, user_dir / "ckpt" / f"step{step}.pt")
        models.append(m)
    cfg = user_config(
        weights={"checkpoints": "ckpt/*.pt", "steps": [3, 9]},
        views={"v": {"outputs": outputs, "layers": {"full": "all", "first": ["0"]}, "top_k": 4}},
    )
    exp = check_config(cfg, SCHEMA, str(user_dir))["u"]
    runner.eigen_file(
        Experiment.from_params(exp.params()), View(**exp.views["v"].params()), exp.checkpoint_files, torch.device("cpu")
    ).save(user_dir / "eigen.npz")
    eig = load_eigen(user_dir / "eigen.npz")  # the contract's keys and shapes
    assert eig.steps.tolist() == [3, 9] and eig.groups == ["full", "first"]
    assert eig.params["first"] == ["0.weight", "0.bias"]
    x = runner.probe_inputs(exp).double()
    for t, model in enumerate(models):
        for group, names in (("full", None), ("first", ["0.weight", "0.bias"])):
            ref = torch.linalg.eigvalsh(brute_force_kernel(model, x, names, outputs)).flip(0)[:4].numpy()
            assert np.allclose(eig.values[group][t], ref, rtol=1e-8, atol=1e-12)
            k = brute_force_kernel(model, x, names, outputs).numpy()
            v = eig.vectors[group][t]
            assert np.allclose(k @ v, v * eig.values[group][t], atol=1e-9 * np.abs(ref).max())
    assert np.array_equal(eig.weights["2.bias"], models[-1].state_dict()["2.bias"].numpy())
    with np.load(user_dir / "eigen.npz") as raw:  # the README's layout: the last checkpoint's weights by name
        assert np.array_equal(raw["weights/2.bias"], models[-1].state_dict()["2.bias"].numpy())


def test_float32_experiment_computes_in_float32(user_dir, monkeypatch):
    # The scale experiment's path (dtype: float32): the model, inputs and kernels in float32, the eigen file
    # in float64, the values within float32 round-off of the float64 reference.
    assert torch.get_default_dtype() == torch.float32  # what a workflow job starts with
    (user_dir / "ckpt").mkdir()
    model = runner.build_model(job_experiment())
    torch.save({"model": model.state_dict()}, user_dir / "ckpt" / "step5.pt")
    cfg = user_config(
        dtype="float32",
        weights={"checkpoints": "ckpt/*.pt", "steps": [5]},
        views={"v": {"outputs": "flatten", "layers": "all", "top_k": 4}},
    )
    exp = check_config(cfg, SCHEMA, str(user_dir))["u"]
    seen = []
    solve = runner.view_eigenpairs

    def spy(net, x, *args):
        seen.append((next(net.parameters()).dtype, x.dtype))
        pairs = solve(net, x, *args)
        seen.extend(v.dtype for pair in pairs.values() for v in pair)
        return pairs

    monkeypatch.setattr(runner, "view_eigenpairs", spy)
    eig = runner.eigen_file(
        Experiment.from_params(exp.params()), View(**exp.views["v"].params()), exp.checkpoint_files, torch.device("cpu")
    )
    assert seen and set(seen) == {(torch.float32, torch.float32), torch.float32}
    x = runner.probe_inputs(exp).double()
    ref = torch.linalg.eigvalsh(brute_force_kernel(model.double(), x, None, "flatten")).flip(0)[:4].numpy()
    (values,) = eig.values.values()
    assert values.dtype == np.float64
    np.testing.assert_allclose(values[0], ref, rtol=1e-4)


def test_one_off_configfile_replaces_experiments(tmp_path):
    from entk.pipeline.config import settle_config

    base = shipped()
    (tmp_path / "one.yaml").write_text(
        yaml.safe_dump({"experiments": {"x": copy.deepcopy(base["experiments"]["mlp"])}})
    )
    cfg = copy.deepcopy(base)
    cfg["experiments"]["x"] = base["experiments"]["mlp"]  # Snakemake's merge adds, never removes
    settle_config(cfg, [tmp_path / "one.yaml"], {}, SCHEMA)
    assert list(cfg["experiments"]) == ["x"] and "paper" not in cfg


def test_the_workflow_validates_each_kind_settings_by_the_kind_itself():
    """The schema the workflow checks a config against holds each kind's own settings schema: a bound
    written only in the kind's module (modadd_mlp's hidden ≥ 1) is enforced at parse time."""
    cfg = shipped()
    cfg["experiments"]["mlp"]["settings"]["hidden"] = 0
    with pytest.raises(ConfigError, match=r"experiments\.mlp\.settings\.hidden'?: 0 is less than the minimum of 1"):
        check_config(cfg, SCHEMA, str(ROOT))


def test_a_bad_setting_the_schema_lets_through_is_refused_by_the_kind_when_the_config_is_read():
    """Each setting is in range, so only the kind's own check, reached while the workflow parses,
    sees that d_model ≠ n_heads·d_head."""
    cfg = shipped()
    cfg["experiments"]["transformer"]["settings"].update(d_model=60, n_heads=4, d_head=16)
    with pytest.raises(ConfigError, match=r"experiments\.transformer\.settings'?: setting 'd_model' of kind"):
        check_config(cfg, SCHEMA, str(ROOT))


def test_paper_transformer_section_names_an_experiment():
    cfg = shipped()
    del cfg["experiments"]["transformer"]
    with pytest.raises(ConfigError, match=r"'paper.transformer': experiment 'transformer' is not under experiments"):
        check_config(cfg, SCHEMA, str(ROOT))


def test_truncated_checkpoint_and_history_are_named(tmp_path):
    from entk import shared as wf

    bundle = tmp_path / "checkpoints.pt"
    wf.save_torch(bundle, {"states": {0: {"w": torch.zeros(3)}}})
    bundle.write_bytes(bundle.read_bytes()[:40])
    with pytest.raises(OSError, match=r"checkpoints.pt is not a readable checkpoint bundle .*truncated or corrupt"):
        next(runner.checkpoint_states([str(bundle)], [0]))
    history = tmp_path / "history.csv"
    history.write_text("epoch,train_loss\n0,1.0\n10,0.5\n")
    with pytest.raises(OSError, match=r"history.csv .*no rows for 2 of 4 epochs \(20, 30\)"):
        wf.read_history(history, [0, 10, 20, 30])


def test_unknown_layer_name_is_named_before_training():
    cfg = shipped()
    cfg["experiments"]["mlp"]["views"]["diag"]["layers"]["layer3"] = ["fc3"]
    with pytest.raises(ConfigError, match=r"'experiments.mlp.views.diag.layers.layer3': unknown parameter or module"):
        check_config(cfg, SCHEMA, str(ROOT))


def test_kind_settings_given_as_yaml_strings_or_integral_floats_are_coerced(tmp_path):
    from entk.pipeline.config import settle_config

    cfg = shipped()
    cfg["experiments"]["mlp"]["settings"].update(lr="1e-3", epochs=60.0, p=13.0, checkpoint_every=10)
    cfg["experiments"]["mlp"]["views"]["diag"]["top_k"] = 60
    cfg["paper"]["modadd"].update(fig3_epochs=[0, 60], fig5_epochs=[60])
    settle_config(cfg, [], {}, SCHEMA)
    settings = cfg["experiments"]["mlp"]["settings"]
    assert settings["lr"] == 0.001 and type(settings["epochs"]) is int and type(settings["p"]) is int
    check_config(cfg, SCHEMA, str(ROOT))


def test_registry_parameter_names_are_the_built_models():
    from entk.kinds.registry import KINDS

    for name, kind in KINDS.items():
        settings = kind.with_defaults({"p": 7} if name.startswith("modadd") else {})
        if name == "hf_causal_lm":
            # A model of the user's: its names are known once its directory is loaded (its first job checks them).
            assert kind.parameters(settings) == []
            continue
        model = kind.function("build")(settings)
        assert [n for n, _ in model.named_parameters()] == kind.parameters(settings), name


def test_registry_sizes_are_the_built_models_outputs_on_their_inputs():
    """The (samples, outputs) a kind declares for the parse-time top_k check: a forward pass of the
    built model on the kind's own inputs has that shape."""
    from entk.kinds.registry import KINDS

    for name, kind in KINDS.items():
        settings = kind.with_defaults(
            {"p": 7} if name.startswith("modadd") else {"n_points": 30} if name == "tms" else {}
        )
        if kind.sizes(settings) is None:
            assert "inputs" not in kind.functions, f"{name}: its inputs are fixed by its settings; declare sizes"
            continue
        with torch.no_grad():
            out = kind.function("build")(settings)(kind.function("inputs")(settings, 0, "k"))
        assert tuple(out.shape) == kind.sizes(settings), name


def test_a_bundle_alone_rebuilds_its_model(tmp_path):
    """A checkpoint bundle records kind, settings, seed and key: the model and its probe inputs come back."""
    from entk import shared as wf
    from entk.kinds.tms import inputs as tms_inputs

    settings = {"n_features": 6, "m": 2, "sparsity": 0.5, "importance_base": 0.8, "n_points": 9, "steps": 3, "lr": 0.01}
    model = runner.build_model(job_experiment(kind="tms", model=None, settings=settings))
    meta = {"kind": "tms", "model": None, "settings": settings, "seed": 4, "seed_key": "k", "weights": "train"}
    wf.save_torch(tmp_path / "checkpoints.pt", {**meta, "steps": [3], "states": {3: model.state_dict()}})
    rebuilt, x, got = runner.from_bundle(str(tmp_path / "checkpoints.pt"))
    assert torch.equal(rebuilt.W, model.W) and torch.equal(x, tms_inputs(settings, 4, "k"))
    assert got["seed_key"] == "k"


def _outside(prop: dict) -> list:
    """Values just outside each bound the schema gives a kind setting (it refuses them)."""
    step = 1 if prop.get("type") == "integer" else 0.5
    out = []
    if "minimum" in prop:
        out.append(prop["minimum"] - step)
    if "exclusiveMinimum" in prop:
        out.append(prop["exclusiveMinimum"])
    if "maximum" in prop:
        out.append(prop["maximum"] + step)
    if "exclusiveMaximum" in prop:
        out.append(prop["exclusiveMaximum"])
    if "enum" in prop:
        out.append("not-" + str(prop["enum"][0]))
    return out


def test_every_value_a_kind_schema_refuses_its_check_refuses_too():
    """A kind's check (which ``kind.train`` and the Python API run without the schema) refuses
    every value just outside a bound its settings schema gives, naming the key."""
    from entk.kinds.registry import KINDS

    disagree = []
    for name, kind in KINDS.items():
        for key, prop in kind.settings.items():
            for bad in _outside(prop):
                if not any(f"'{key}'" in m for m in kind.check({**kind.defaults, key: bad})):
                    disagree.append(f"{name}.{key} = {bad!r}: the schema refuses it, the kind's check does not")
    assert not disagree, "\n".join(disagree)


def test_every_recipe_takes_the_train_recipe_protocols_parameters():
    """The kinds' recipes and the example's own keep the one signature ``TrainRecipe`` names: the same
    parameters, in order, of the same kinds (positional or keyword-only)."""
    import importlib.util
    import inspect

    from entk.kinds.registry import KINDS, TrainRecipe

    def shape(fn):
        params = list(inspect.signature(fn).parameters.values())
        return [(p.name, p.kind) for p in params if p.name != "self"]

    spec = importlib.util.spec_from_file_location("own_model", ROOT / "examples" / "own_model" / "model.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    recipes = {name: kind.train() for name, kind in KINDS.items()} | {"examples/own_model": example.train}
    wanted = shape(TrainRecipe.__call__)
    assert [n for n, _ in wanted][:3] == ["settings", "seed", "key"]
    assert {name: shape(fn) for name, fn in recipes.items() if shape(fn) != wanted} == {}
