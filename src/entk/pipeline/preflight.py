"""What an experiment's first job checks before any work: the model builds, one forward pass on the
first probe input runs, and every view's position, output weights, layer groups, top-k and
candidate features fit what that pass shows. A mistake in the user's model, inputs or features
then fails the train job before training (or the eigen job before its first kernel), in one line
that names the config key and the file, instead of as a raw torch error after hours of work.

Also here: the contract a training recipe must keep (``RecipeCheckpoints``: it saves a state with
the model's ``state_dict`` under "model" at exactly the configured steps, and returns its history),
checked as the recipe calls ``save_checkpoint`` and when it returns, and ``code_digest``, which makes
a change to the recipe's code start a killed training run over rather than resume it.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from entk.core.checks import check_model, check_output_weights
from entk.core.selection import resolve_params
from entk.kinds import training
from entk.pipeline import runner
from entk.pipeline.experiments import Experiment, FunctionSpec, View


def _forward_once(exp: Experiment, model: nn.Module, x1: Tensor) -> None:
    """One forward pass on the first probe input (1, ...); an error names the model, the inputs and x1."""
    try:
        with torch.no_grad():
            model.eval()(x1)
    except Exception as e:
        raise ValueError(
            f"{runner.config_key(exp, 'model')}: {exp.model or exp.kind} fails on the first probe input of "
            f"{exp.inputs} (shape {tuple(x1.shape)}, {x1.dtype}): {type(e).__name__}: {e}; make the inputs what "
            "the model's forward takes (shape, integer token ids or floats)"
        ) from e


def features_problem(features: np.ndarray, n_samples: int) -> str:
    """Why candidate features (N, F) or integer labels (N,) cannot be compared with eigenvectors, or ""."""
    f = np.asarray(features)
    if f.ndim == 1 and not (np.issubdtype(f.dtype, np.integer) and (f.size == 0 or f.min() >= 0)):
        return f"1-D features must be non-negative integer labels, got {f.dtype}"
    if f.ndim not in (1, 2) or f.shape[0] != n_samples:
        return f"need one row per probe input, (N, F) or labels (N,) with N = {n_samples}; got shape {f.shape}"
    if not np.issubdtype(f.dtype, np.number) or not np.isfinite(f).all():
        return "holds NaN, infinite or non-numeric values; give finite numbers"
    if f.ndim == 1 and np.unique(f).size < 2:
        return f"every label is {f[0]} (one class): one-hot labels of one class have no direction; give two or more"
    if f.ndim == 2 and not (f != f[:1]).any():
        return "every feature is constant over the probe inputs, so none has a direction; give features that vary"
    return ""


def _check_features(exp: Experiment, view: View, n_samples: int) -> None:
    spec = view.features
    if not spec:
        return
    where = f"{runner.config_key(exp, 'views', view.name, 'features')}: {spec}"
    try:
        f = np.load(spec, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{where} is not a numeric .npy array ({e}); save one with np.save") from None
    problem = features_problem(f, n_samples)
    if problem:
        raise ValueError(f"{where}: {problem}")


def check_view(exp: Experiment, view: View, net: nn.Module, x: Tensor, log: Callable[[str], None]) -> None:
    """Refuse a view that does not fit the model's output on x (N, ...) (position, output weights, layer
    groups, features); log what the eigen job will do differently from what the view says (top-k cut
    to the kernel's size, frozen parameters named in a group)."""
    key = lambda *k: runner.config_key(exp, "views", view.name, *k)  # noqa: E731
    try:
        model, prefix = runner.positioned(net, x, view.position)
        groups = runner.view_groups(model, view.layers, prefix)
    except ValueError as e:
        raise ValueError(f"{key()}: {e}") from None
    with torch.no_grad():
        n_outputs = model(x[:1]).shape[1]
    try:
        weights = runner.output_weights(exp, view.output_weights, n_outputs)
        check_output_weights(weights)
        negative = [] if weights is None else (weights < 0).nonzero().flatten().tolist()
        if negative:
            raise ValueError(f"weights of outputs {negative[:5]} are negative; give weights ≥ 0 (0 drops an output)")
    except (ValueError, OSError) as e:
        raise ValueError(f"{key('output_weights')}: {e}") from None
    dim = x.shape[0] * (n_outputs if view.outputs == "flatten" else 1)
    if view.top_k > dim:
        log(f"view {view.name}: top_k = {view.top_k} exceeds the kernel's dimension {dim}: keeping all {dim}")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    for g, names in groups.items():
        chosen = [] if names is None else [n for ns in resolve_params(model, names).values() for n in ns]
        named = sorted(n.removeprefix(prefix) for n in frozen.intersection(chosen))
        if named:
            log(
                f"view {view.name}, layer group {g!r}: includes frozen parameter(s) {named} (requires_grad=False) "
                "as named; their Jacobians count in its kernel"
            )
    _check_features(exp, view, x.shape[0])


def check_experiment(
    exp: Experiment, views: list[View], device: torch.device, log: Callable[[str], None] = print
) -> dict[str, tuple[int, ...]]:
    """Build the model, load the probe inputs, run one forward pass on the first of them and check
    every view against it; any problem raises before work starts, naming its config key and file.
    Returns the model's ``state_shapes``, what each checkpoint of it must hold."""
    dtype = {"float32": torch.float32, "float64": torch.float64}[exp.dtype]
    net = runner.build_model(exp).to(device, dtype)
    check_model(net)
    if exp.inputs == "kind" and "inputs" not in exp.registered_kind.functions:
        # Probes made from the trained model (a language model's contexts) are checked by the job that makes them.
        log("checked before any work: the model (its probe inputs are made from the trained model)")
        return runner.state_shapes(net)
    x = runner.probe_inputs(exp)
    x = x.to(device, dtype) if x.is_floating_point() else x.to(device)
    _forward_once(exp, net, x[:1])
    for view in views:
        check_view(exp, view, net, x, log)
    log(f"checked before any work: the model, {x.shape[0]} probe inputs and {len(views)} view(s)")
    return runner.state_shapes(net)


def code_digest(exp: Experiment) -> str:
    """SHA-256 of the source files that define the experiment's model and training recipe: part of what a
    resumed training run must match, so that code changed after a crash starts it over."""
    files = set()
    if exp.kind is not None:
        # A kind's module imports its torch code (models, training loops) only when called, so the
        # whole kinds package stands for it: a change to another kind only costs a fresh start.
        files |= set(Path(inspect.getsourcefile(training)).parent.glob("*.py"))
    else:
        files.add(FunctionSpec.parse(exp.model).path)
    weights = exp.weights
    if isinstance(weights, dict) and "train" in weights:
        files.add(FunctionSpec.parse(weights["train"]).path)
    digest = hashlib.sha256()
    for f in sorted(str(Path(f).resolve()) for f in files):
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()


class RecipeCheckpoints:
    """The ``save_checkpoint`` a recipe gets: it refuses, as the recipe calls it, a step outside the
    configured ones and a state that is not a dict holding the model's ``state_dict`` under "model";
    ``finish`` refuses a return without every step saved or without a history."""

    def __init__(self, store, steps: list[int], shapes: dict[str, tuple[int, ...]], recipe: str):
        self.store, self.steps, self.shapes, self.recipe = store, list(steps), shapes, recipe

    def __call__(self, step: int, state: dict) -> None:
        if step not in self.steps:
            raise ValueError(
                f"{self.recipe} saved a checkpoint at step {step!r}, which is not one of its steps {self.steps}; "
                "save exactly at checkpoint_steps"
            )
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            got = f"a dict with keys {sorted(map(str, state))}" if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{self.recipe} saved {got} at step {step}; save a dict holding the model's weights under "
                "'model': save_checkpoint(step, {'model': model.state_dict(), ...})"
            )
        mismatch = runner.state_mismatch(self.shapes, state["model"])
        if mismatch:
            raise ValueError(
                f"{self.recipe} saved at step {step} a 'model' state that does not fit the experiment's model "
                f"({mismatch}); save model.state_dict() of the model its model function builds"
            )
        self.store.save(step, state)

    def finish(self, history) -> pd.DataFrame:
        """The recipe's history as a DataFrame, once every step has its checkpoint."""
        missing = self.store.missing()
        if missing:
            raise ValueError(
                f"{self.recipe} returned without saving the checkpoints of steps {missing}; call "
                "save_checkpoint(step, state) at every step in checkpoint_steps"
            )
        if isinstance(history, pd.DataFrame):
            return history
        if isinstance(history, list | dict) and history:
            return pd.DataFrame(history)
        raise ValueError(
            f"{self.recipe} returned {type(history).__name__}; return the training history, a pandas DataFrame "
            "with one row per logged step"
        )
