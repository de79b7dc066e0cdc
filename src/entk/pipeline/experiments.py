"""Experiments as data: the config's ``experiments:`` entries resolved into what the rules wire.

Runs while Snakemake parses the workflow, so it imports neither torch nor numpy. Every problem is
reported with the config key it comes from and how to fix it, before any job starts.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field, fields, replace
from functools import cached_property

from entk.kinds.registry import KINDS, Kind, get_kind

# The view keys of an entry (its defaults) or of one of its views, each with its default.
VIEW_DEFAULTS = {
    "outputs": "diag_mean",
    "output_weights": None,
    "position": None,
    "layers": "all",
    "top_k": 20,
    "checkpoints": "all",
    "features": None,
}
VIEW_KEYS = tuple(VIEW_DEFAULTS)
LAYER_KEYWORDS = ("all", "per_tensor", "per_module")


class Untracked:
    """Data a job reads from its rule's params without Snakemake recording it: Snakemake records (and
    reruns a job on a change of) params of builtin types only. The train job checks every view before
    training; a changed view must rerun its eigen job, not the training."""

    def __init__(self, value):
        self.value = value


@dataclass(frozen=True)
class View:
    """One eNTK analysis of an experiment: the output reduction, layer groups, top-k, checkpoints."""

    name: str
    outputs: str
    output_weights: object
    position: int | None
    layers: str | dict[str, str | list[str]]  # a keyword of LAYER_KEYWORDS or {group: "all" | [names]}
    top_k: int
    steps: list[int]  # the checkpoints it analyses
    features: str | None

    def params(self) -> dict:
        """The view as plain data (rule params); a job gets the view back as ``View(**params)``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Experiment:
    """One config entry, resolved: model, weights, inputs, settings and views."""

    id: str
    kind: str | None
    model: str | None
    settings: dict
    weights: object
    inputs: str
    default: bool
    seed: int
    seed_key: str
    dtype: str
    max_memory_gb: float | None
    eigen_threads: int
    steps: list[int]  # every checkpoint's step, ascending
    checkpoint_files: list[str]  # user checkpoints, one per step; empty when the workflow trains
    views: dict[str, View] = field(default_factory=dict)

    @property
    def trained_here(self) -> bool:
        return not (isinstance(self.weights, dict) and "checkpoints" in self.weights)

    @cached_property
    def registered_kind(self) -> Kind | None:
        """The experiment's kind (None for a model of the user's), looked up once."""
        return None if self.kind is None else get_kind(self.kind)

    def user_files(self) -> list[str]:
        """Files of the user's that the experiment's jobs read (model, inputs, recipe): a change reruns them."""
        specs = [self.model, self.inputs]
        if isinstance(self.weights, dict) and "train" in self.weights:
            specs.append(self.weights["train"])
        files = []
        for spec in specs:
            if FunctionSpec.names_one(spec):
                files.append(FunctionSpec.parse(spec).path)
            elif spec and spec.endswith((".pt", ".npy")):
                files.append(spec)
        return files

    def params(self) -> dict:
        """What the train and eigen jobs need of the experiment, as plain data (rule params): Snakemake
        reruns a job when they change. A job gets the experiment back with ``from_params``."""
        return {name: getattr(self, name) for name in _JOB_FIELDS}

    @classmethod
    def from_params(cls, params: dict) -> Experiment:
        """The experiment of a job's ``params()``. What only the workflow's wiring reads is not part of it:
        ``checkpoint_files`` and ``views`` are empty, ``default`` and ``eigen_threads`` placeholders."""
        return cls(**params, default=True, eigen_threads=1, checkpoint_files=[], views={})


_JOB_FIELDS = (
    "id",
    "kind",
    "model",
    "settings",
    "weights",
    "inputs",
    "seed",
    "seed_key",
    "dtype",
    "max_memory_gb",
    "steps",
)


@dataclass(frozen=True)
class FunctionSpec:
    """A user's function named in the config as ``path/file.py:function`` (model, inputs, weights.train)."""

    path: str
    name: str

    @classmethod
    def parse(cls, spec: str) -> FunctionSpec:
        path, _, name = spec.rpartition(":")
        return cls(path, name)

    @staticmethod
    def names_one(spec) -> bool:
        """Whether a config value names a function (else a kind, a tensor file or nothing)."""
        return isinstance(spec, str) and ".py:" in spec


def natural_key(path: str) -> list:
    """Sort key that orders numbers in a name as numbers: step_2 before step_10 (text order would
    put step_10 first and label the files with the wrong steps)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _where(exp_id: str, *keys: str) -> str:
    return "config key '" + ".".join(("experiments", exp_id, *keys)) + "'"


def _user_file(spec: str, basedir: str, where: str, errors: list[str]) -> None:
    """Check that the file of a "file.py:function" spec exists."""
    path = FunctionSpec.parse(spec).path
    if not os.path.isfile(os.path.join(basedir, path)):
        errors.append(f"{where}: {path} does not exist (paths are relative to the working directory {basedir})")


def _steps_of_weights(exp_id: str, entry: dict, kind, settings: dict, basedir: str, errors: list[str]):
    """(steps, user checkpoint files) of an entry."""
    weights = entry.get("weights", "train")
    if weights == "train":
        if kind is None:
            errors.append(
                f"{_where(exp_id, 'weights')}: a model of your own has no training recipe; give weights: "
                "{checkpoints: [...]} or {train: file.py:function, steps: [...]}"
            )
            return [], []
        return list(kind.checkpoint_steps(settings)), []
    if "train" in weights:
        _user_file(weights["train"], basedir, _where(exp_id, "weights", "train"), errors)
        return sorted(set(weights["steps"])), []
    spec = weights["checkpoints"]
    if isinstance(spec, str):
        # Paths stay as the user wrote them (relative to the working directory), as Snakemake expects.
        files = sorted(
            (
                os.path.relpath(f, basedir) if not os.path.isabs(spec) else f
                for f in glob.glob(os.path.join(basedir, spec))
            ),
            key=natural_key,
        )
        if not files:
            errors.append(
                f"{_where(exp_id, 'weights', 'checkpoints')}: no file matches {spec!r} (relative to {basedir})"
            )
            return [], []
    else:
        files = list(spec)
        missing = [f for f in spec if not os.path.isfile(os.path.join(basedir, f))]
        if missing:
            errors.append(f"{_where(exp_id, 'weights', 'checkpoints')}: missing file(s) {missing}")
    steps = weights.get("steps", list(range(len(files))))
    if len(steps) != len(files):
        errors.append(
            f"{_where(exp_id, 'weights', 'steps')}: {len(steps)} steps for {len(files)} checkpoint files; "
            "give one step per file"
        )
    elif sorted(steps) != list(steps) or len(set(steps)) != len(steps):
        errors.append(
            f"{_where(exp_id, 'weights', 'steps')}: {steps} must increase (the files' order is the training axis)"
        )
    return list(steps), files


def _view(exp_id: str, name: str, spec: dict, steps: list[int], errors: list[str]) -> View:
    where = lambda *k: _where(exp_id, "views", name, *k)  # noqa: E731
    layers = spec["layers"]
    if isinstance(layers, str) and layers not in LAYER_KEYWORDS:
        errors.append(f"{where('layers')}: {layers!r} must be one of {LAYER_KEYWORDS} or a map of groups")
    chosen = spec["checkpoints"]
    if chosen == "all":
        view_steps = list(steps)
    elif chosen == "last":
        view_steps = steps[-1:]
    else:
        missing = sorted(set(chosen) - set(steps))
        if missing:
            errors.append(f"{where('checkpoints')}: steps {missing} have no checkpoint (checkpoints: {steps})")
        view_steps = sorted(set(chosen) & set(steps))
    return View(
        name,
        spec["outputs"],
        spec["output_weights"],
        spec["position"],
        layers,
        spec["top_k"],
        view_steps,
        spec["features"],
    )


def _layer_errors(exp_id: str, views: dict[str, View], params: list[str]) -> list[str]:
    """Layer groups naming no parameter or module of a registered kind's model (known before training)."""
    modules = {p.rpartition(".")[0] for p in params} - {""}
    errors = []
    for view in views.values():
        if not isinstance(view.layers, dict):
            continue
        for group, names in view.layers.items():
            unknown = [] if names == "all" else [n for n in names if n not in params and n not in modules]
            if unknown:
                errors.append(
                    f"{_where(exp_id, 'views', view.name, 'layers', group)}: unknown parameter or module name(s) "
                    f"{unknown}; parameters: {params}, modules: {sorted(modules)}"
                )
    return errors


def resolve_experiment(exp_id: str, entry: dict, config: dict, basedir: str, errors: list[str]) -> Experiment | None:
    """One entry → Experiment; problems are appended to ``errors`` (None when it cannot be built)."""
    has_kind, has_model = "kind" in entry, "model" in entry
    if has_kind == has_model:
        errors.append(
            f"{_where(exp_id)}: give exactly one of kind (registered: {sorted(KINDS)}) or model: file.py:function"
        )
        return None
    kind = None
    if has_kind:
        try:
            kind = get_kind(entry["kind"])
            settings = kind.with_defaults(entry.get("settings"))
        except ValueError as err:
            errors.append(f"{_where(exp_id, 'settings' if entry['kind'] in KINDS else 'kind')}: {err}")
            return None
        errors.extend(f"{_where(exp_id, 'settings')}: {msg}" for msg in kind.check(settings))
    else:
        settings = dict(entry.get("settings", {}))
        _user_file(entry["model"], basedir, _where(exp_id, "model"), errors)
    inputs = entry.get("inputs", "kind")
    if inputs == "kind" and kind is None:
        errors.append(
            f"{_where(exp_id, 'inputs')}: a model of your own needs inputs: a .pt/.npy file or file.py:function"
        )
    elif inputs != "kind":
        if inputs.endswith((".pt", ".npy")):
            if not os.path.isfile(os.path.join(basedir, inputs)):
                errors.append(f"{_where(exp_id, 'inputs')}: {inputs} does not exist (relative to {basedir})")
        elif FunctionSpec.names_one(inputs):
            _user_file(inputs, basedir, _where(exp_id, "inputs"), errors)
        else:
            errors.append(f"{_where(exp_id, 'inputs')}: {inputs!r} must be kind, a .pt/.npy file or file.py:function")
    steps, files = _steps_of_weights(exp_id, entry, kind, settings, basedir, errors)
    base = {k: entry.get(k, VIEW_DEFAULTS[k]) for k in VIEW_KEYS}
    view_specs = entry.get("views") or {"main": {}}
    views = {name: _view(exp_id, name, {**base, **spec}, steps, errors) for name, spec in view_specs.items()}
    if kind is not None:
        errors.extend(_layer_errors(exp_id, views, kind.parameters(settings)))
    for view in views.values():
        if isinstance(view.output_weights, dict) and (kind is None or "importance" not in kind.functions):
            errors.append(
                f"{_where(exp_id, 'views', view.name, 'output_weights')}: {{importance: β}} needs a kind with output "
                "importances (tms); give a list of weights or a .npy file instead"
            )
        weights = view.output_weights
        if isinstance(weights, list) and weights and not any(weights):
            errors.append(
                f"{_where(exp_id, 'views', view.name, 'output_weights')}: every weight is zero, so the kernel would "
                "be zero; give at least one positive weight"
            )
        if view.features and not os.path.isfile(os.path.join(basedir, view.features)):
            errors.append(f"{_where(exp_id, 'views', view.name, 'features')}: {view.features} does not exist")
    return Experiment(
        id=exp_id,
        kind=entry.get("kind"),
        model=entry.get("model"),
        settings=settings,
        weights=entry.get("weights", "train"),
        inputs=inputs,
        default=entry.get("default", True),
        seed=entry.get("seed", config.get("seed", 0)),
        seed_key=entry.get("seed_key", exp_id),
        dtype=entry.get("dtype", config.get("dtype", "float64")),
        max_memory_gb=entry.get("max_memory_gb", config.get("max_memory_gb")),
        eigen_threads=entry.get("eigen_threads", 1),
        steps=steps,
        checkpoint_files=files,
        views=views,
    )


def seed_unit(exp_id: str, seed: int) -> str:
    """The id (and results directory under results/) of seed ``seed`` of an entry that lists seeds."""
    return f"{exp_id}/seed{seed}"


def resolve_experiments(config: dict, basedir: str) -> tuple[dict[str, Experiment], list[str]]:
    """Every unit of work of a schema-valid config, and the problems found (none: []).

    An entry with ``seeds: [s, …]`` is one unit per seed, id ``seed_unit(id, s)``, each with its
    own results directory and the entry's seed_key (default its id): seed s's unit trains what a
    single-seed entry with ``seed: s`` and that seed_key trains.
    """
    errors: list[str] = []
    experiments = {}
    for exp_id, entry in config["experiments"].items():
        if "seed" in entry and "seeds" in entry:
            errors.append(f"{_where(exp_id)}: give seed (one run) or seeds (one run per seed), not both")
            continue
        exp = resolve_experiment(exp_id, {k: v for k, v in entry.items() if k != "seeds"}, config, basedir, errors)
        if exp is None:
            continue
        for seed in entry.get("seeds", []):
            experiments[seed_unit(exp_id, seed)] = replace(exp, id=seed_unit(exp_id, seed), seed=seed)
        if "seeds" not in entry:
            experiments[exp_id] = exp
    return experiments, errors
