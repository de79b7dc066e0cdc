"""What the workflow's train and eigen jobs do for any experiment: build its model (a registered
kind or the user's ``file.py:function``), load its inputs and checkpoints, and compute each view's
eigenpairs. A job rebuilds its experiment and view from its rule's params
(``Experiment.from_params``, ``View(**params)``) and passes those objects down.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from entk.analyses.analysis import EigenFile
from entk.core.checks import analysed_model, check_inputs
from entk.core.ntk import NTK
from entk.core.selection import module_groups, resolve_params
from entk.kinds.registry import TrainRecipe
from entk.pipeline.experiments import Experiment, FunctionSpec, View
from entk.shared import load_torch


def load_function(spec: str, what: str) -> Callable:
    """The function of a ``path/file.py:function`` spec; errors name the file and the function."""
    fn_spec = FunctionSpec.parse(spec)
    path, name = fn_spec.path, fn_spec.name
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist (paths are relative to the working directory)")
    module_name = f"entk_user_{abs(hash(file.resolve()))}"
    if module_name not in sys.modules:
        loader = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        loader.loader.exec_module(module)
    fn = getattr(sys.modules[module_name], name, None)
    if not callable(fn):
        raise AttributeError(f"{what}: {path} has no function {name!r}")
    return fn


def config_key(exp: Experiment, *keys: str) -> str:
    """'config key 'experiments.<id>.<keys>'' for messages about an experiment's entry."""
    return "config key '" + ".".join(("experiments", exp.id, *keys)) + "'"


def _call_with_settings(fn: Callable, settings: dict, where: str = ""):
    """Call ``fn`` with the settings it names (all of them if it takes **kwargs); an error raised in it
    is re-raised naming ``where`` (the config key and the function) above the function's own traceback."""
    sig = inspect.signature(fn)
    takes_all = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    given = settings if takes_all else {k: v for k, v in settings.items() if k in sig.parameters}
    try:
        return fn(**given)
    except Exception as e:
        raise UserFunctionError(
            f"{where or fn.__name__} raised {type(e).__name__}: {e} (called with settings {sorted(given)}); "
            "fix the function (its traceback is above)"
        ) from e


class UserFunctionError(RuntimeError):
    """A function of the user's (model, inputs, recipe) raised; the message names it and its config key."""


def build_model(exp: Experiment) -> nn.Module:
    """An untrained model of the experiment (weights come from a checkpoint)."""
    if exp.registered_kind is not None:
        model = exp.registered_kind.function("build")(exp.settings)
    else:
        where = f"{config_key(exp, 'model')}: {exp.model}"
        model = _call_with_settings(load_function(exp.model, "model"), exp.settings, where)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{config_key(exp, 'model')}: {exp.model or exp.kind} returned {type(model).__name__}, not a "
            "torch.nn.Module; return the model itself"
        )
    return model


def probe_inputs(exp: Experiment) -> Tensor:
    """The experiment's probe inputs (N, ...): the kind's own, a .pt/.npy file, or file.py:function."""
    spec, where = exp.inputs, f"{config_key(exp, 'inputs')}: {exp.inputs}"
    if spec == "kind":
        x = exp.registered_kind.function("inputs")(exp.settings, exp.seed, exp.seed_key)
    elif spec.endswith(".npy"):
        try:
            x = torch.from_numpy(np.load(spec, allow_pickle=False))
        except (ValueError, OSError) as e:
            raise ValueError(f"{where} is not a numeric .npy array ({e}); save one with np.save(path, x)") from None
    elif spec.endswith(".pt"):
        x = load_torch(spec, what="probe inputs", yours=True, map_location="cpu")
    else:
        x = _call_with_settings(load_function(spec, "inputs"), exp.settings, where)
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{where} returned {type(x).__name__}, not a tensor (N, ...): {e}") from None
    if isinstance(x, dict):
        raise ValueError(
            f"{where} holds a dict (keys {sorted(map(str, x))[:5]}), not a tensor; save the probe inputs themselves, "
            "torch.save(x, path) with x of shape (N, ...)"
        )
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{where}: need a tensor of shape (N, ...) with N ≥ 1, got {getattr(x, 'shape', x)!r}")
    try:
        check_inputs(x)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return x


def train_function(exp: Experiment) -> TrainRecipe:
    """The training recipe: the kind's, or the user's ``weights: {train: file.py:function}``."""
    weights = exp.weights
    if isinstance(weights, dict) and "train" in weights:
        return load_function(weights["train"], "weights.train")
    return exp.registered_kind.train()


def _state_dict_of(obj, path: str) -> dict:
    if isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values()):
        return obj
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    raise ValueError(
        f"{path}: not a state_dict (a map of tensors, or a dict holding one under 'model' or 'state_dict')"
    )


def checkpoint_states(paths: list[str], steps: list[int]) -> Iterator[tuple[int, dict]]:
    """(step, state_dict) of each analysed step: from the workflow's bundle (one path) or from the
    user's files (one per step, in ``steps`` order of the experiment)."""
    if len(paths) == 1 and paths[0].endswith("checkpoints.pt"):
        bundle = load_torch(paths[0], what="checkpoint bundle", map_location="cpu")
        for step in steps:
            yield step, bundle["states"][step]
        return
    if len(paths) != len(steps):
        raise ValueError(f"{len(paths)} checkpoint files for {len(steps)} steps: give one step per file")
    for step, path in zip(steps, paths, strict=True):
        yield step, _state_dict_of(load_torch(path, what="checkpoint", yours=True, map_location="cpu"), path)


def from_bundle(path: str, step: int | None = None) -> tuple[nn.Module, Tensor, dict]:
    """A model trained by the workflow, rebuilt from its checkpoint bundle alone
    (``results/<experiment>/checkpoints.pt``): (model at ``step`` (default the last), its probe
    inputs (N, ...), the bundle's meta: kind, settings, seed, seed_key)."""
    bundle = load_torch(path, what="checkpoint bundle", map_location="cpu")
    if bundle["kind"] is None:
        raise ValueError(f"{path}: a model of your own; its bundle does not say how to build it")
    exp = Experiment.from_params(
        {
            "id": Path(path).parent.name,
            "kind": bundle["kind"],
            "model": bundle["model"],
            "settings": bundle["settings"],
            "weights": bundle["weights"],
            "inputs": "kind",
            "seed": bundle["seed"],
            "seed_key": bundle["seed_key"],
            "dtype": "float64",
            "max_memory_gb": None,
            "steps": bundle["steps"],
        }
    )
    model = build_model(exp)
    step = bundle["steps"][-1] if step is None else step
    load_state(model, bundle["states"][step], f"{path} (step {step})")
    meta = {k: bundle[k] for k in ("kind", "settings", "seed", "seed_key")}
    return model, probe_inputs(exp), meta


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """{state_dict key: shape} of a model: what a checkpoint of it must hold."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def state_mismatch(shapes: dict[str, tuple[int, ...]], state: dict) -> str:
    """What keeps ``state`` from loading into a model of these ``state_shapes`` (missing or unexpected
    keys, other shapes), or ""."""
    missing, unexpected = shapes.keys() - state.keys(), state.keys() - shapes.keys()
    if missing or unexpected:
        return f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}"
    other = [
        f"{k} {tuple(getattr(state[k], 'shape', ()))} for {shape}"
        for k, shape in shapes.items()
        if not isinstance(state[k], Tensor) or tuple(state[k].shape) != shape
    ]
    return f"other shapes: {', '.join(other[:5])}" if other else ""


def load_state(model: nn.Module, state: dict, where: str) -> None:
    """``load_state_dict`` whose error names the checkpoint and lists missing and unexpected keys or shapes."""
    mismatch = state_mismatch(state_shapes(model), state)
    if mismatch:
        raise ValueError(
            f"{where} does not fit the model: {mismatch}; "
            "check the model's settings against the ones the checkpoint was trained with"
        )
    model.load_state_dict(state)


class AtPosition(nn.Module):
    """Wraps a model with sequence outputs (N, T, C) into one with outputs (N, C) at ``position``."""

    def __init__(self, net: nn.Module, position: int):
        super().__init__()
        self.net, self.position = net, position

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, self.position]


def positioned(model: nn.Module, x: Tensor, position: int | None) -> tuple[nn.Module, str]:
    """The model whose outputs are (N, C), and the prefix its parameter names gained. A forward that
    returns a tuple or a mapping is analysed at its first element or its "logits" (``analysed_model``)."""
    model = analysed_model(model, x[:1])
    with torch.no_grad():
        out = model(x[:1])
    if position is None:
        if out.ndim != 2:
            raise ValueError(
                f"the model's output has shape {tuple(out.shape)} for one sample; a sequence output (N, T, C) "
                "needs position: (the index of the analysed position) in the view"
            )
        return model, ""
    if out.ndim != 3:
        raise ValueError(f"position: {position} is set but the model's output is {tuple(out.shape)}, not (N, T, C)")
    if not -out.shape[1] <= position < out.shape[1]:
        raise ValueError(f"position: {position} is outside the {out.shape[1]} output positions")
    return AtPosition(model, position), "net."


def view_groups(model: nn.Module, layers, prefix: str = "") -> dict[str, list[str] | None]:
    """A view's ``layers:`` setting → {group: parameter/module names, None = all}.

    ``all`` is one group "full"; ``per_tensor`` one group per parameter; ``per_module`` one per
    module that owns parameters (``entk.core.selection.module_groups``)."""
    inner = model.net if prefix else model
    if layers == "all":
        return {"full": None}
    if layers == "per_tensor":
        return {name: [prefix + name] for name, _ in inner.named_parameters()}
    if layers == "per_module":
        return {m: [prefix + n for n in names] for m, names in module_groups(inner).items()}
    groups = {}
    for name, spec in layers.items():
        groups[name] = None if spec == "all" else [prefix + s for s in spec]
        if groups[name] is not None:
            try:
                resolve_params(model, groups[name])
            except ValueError as err:
                raise ValueError(f"layer group {name!r}: {err}".replace(prefix, "")) from None
    return groups


def output_weights(exp: Experiment, spec, n_outputs: int) -> Tensor | None:
    """The view's output weights (C,): None, a list, a .npy file, or {importance: β} → I^(β/2)."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        importance = exp.registered_kind.function("importance")(exp.settings).double()
        w = importance ** (spec["importance"] / 2)
    elif isinstance(spec, str):
        w = torch.from_numpy(np.load(spec, allow_pickle=False)).double()
    else:
        w = torch.tensor(spec, dtype=torch.float64)
    if w.shape != (n_outputs,):
        raise ValueError(f"output_weights: need {n_outputs} weights, one per output, got shape {tuple(w.shape)}")
    return w


def view_eigenpairs(
    model: nn.Module,
    x: Tensor,
    groups: dict[str, list[str] | None],
    outputs: str,
    weights: Tensor | None,
    k: int,
    max_memory_gb: float | None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Top-k eigenpairs {group: (values (k,), vectors (D, k))} of each group's kernel, from one
    ``entk.NTK``: each atom's kernel is computed once for every group that holds it, and groups whose
    kernels would not fit the budget go matrix-free."""
    ntk = NTK(model, x, groups=groups, outputs=outputs, output_weights=weights, max_memory_gb=max_memory_gb)
    # A top_k above the kernel's size keeps them all; the eigen job's log says so (entk.pipeline.preflight).
    k = min(k, ntk.dim)
    return {g: ntk.eigenpairs(k, g) for g in groups}


def eigen_file(
    exp: Experiment, view: View, checkpoints: list[str], device: torch.device, log: Callable[[str], None] = print
) -> EigenFile:
    """One view's eigen file (docs: README, "The eigen file") over its checkpoints."""
    dtype = {"float32": torch.float32, "float64": torch.float64}[exp.dtype]
    x = probe_inputs(exp)
    x_dev = x.to(device, dtype) if x.is_floating_point() else x.to(device)
    net = build_model(exp).to(device, dtype)
    # The workflow's bundle holds every step; a user's files come one per step of the experiment.
    states = checkpoint_states(checkpoints, view.steps if len(checkpoints) == 1 else exp.steps)
    wanted = set(view.steps)
    values: dict[str, list] = {}
    vectors: dict[str, list] = {}
    steps, groups, last_state = [], None, None
    start = time.perf_counter()
    for step, state in states:
        if step not in wanted:
            continue
        load_state(net, state, f"checkpoint of step {step}")
        net.eval()
        model, prefix = positioned(net, x_dev, view.position)
        if groups is None:
            groups = view_groups(model, view.layers, prefix)
            with torch.no_grad():
                n_outputs = model(x_dev[:1]).shape[1]
            weights = output_weights(exp, view.output_weights, n_outputs)
            weights = None if weights is None else weights.to(device, dtype)
        pairs = view_eigenpairs(model, x_dev, groups, view.outputs, weights, view.top_k, exp.max_memory_gb)
        for g, (vals, vecs) in pairs.items():
            values.setdefault(g, []).append(vals.double().cpu().numpy())
            vectors.setdefault(g, []).append(vecs.double().cpu().numpy())
        steps.append(step)
        last_state = state
        top = ", ".join(f"{g} λ1 {v[-1][0]:.4g}" for g, v in values.items())
        k = len(next(iter(values.values()))[-1])
        log(f"step {step}: {len(groups)} kernel(s) top {k}: {top} ({time.perf_counter() - start:.1f} s)")
        zero = [g for g, v in values.items() if not v[-1].any()]
        if zero:
            log(
                f"step {step}: every eigenvalue of group(s) {zero} is zero: their parameters do not change the "
                "outputs on these inputs (unused, or behind a dead path); reported with no cliffs"
            )
    return EigenFile(
        steps=np.asarray(steps, dtype=np.int64),
        groups=list(groups),
        values={g: np.stack(values[g]) for g in groups},
        vectors={g: np.stack(vectors[g]) for g in groups},
        params={g: _group_param_names(model, names, prefix) for g, names in groups.items()},
        inputs=x.double().numpy() if x.is_floating_point() else x.numpy(),
        outputs=view.outputs,
        n_outputs=n_outputs,
        n_samples=x.shape[0],
        weights={name: last_state[name].double().cpu().numpy() for name, _ in net.named_parameters()},
    )


def _group_param_names(model: nn.Module, names: list[str] | None, prefix: str) -> list[str]:
    """The parameter names a group selects, without the position wrapper's prefix."""
    return [n.removeprefix(prefix) for per_module in resolve_params(model, names).values() for n in per_module]
