"""The config's ``language_models:`` entries resolved into what the language-model rules wire
(docs/spec.md §4). Runs while Snakemake parses the workflow: no torch, no numpy.

Each entry is keyed by an experiment whose model is a Hugging Face causal LM: either trained here by
a kind that also writes its probe corpus (``corpus``) and saves Hugging Face checkpoint directories
(``save_pretrained``), its modules known before training from the kind's parameter names; or a
model of the user's (a kind with ``contexts``, ``directories`` and ``resolve``: hf_causal_lm), whose
directories, files and number of blocks ``resolve`` checks here (it reads ``config.json`` with
transformers, so only a config with such an entry pays that import while parsing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROLE_SUFFIX = {"mlp_out": "mlp.down_proj", "attn_out": "self_attn.o_proj"}
STATES = ("trained", "init")
SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "config.schema.yaml"


@dataclass(frozen=True)
class LanguageModel:
    """One language-model analysis: its experiment, settings, modules ("role.index" or names) of the
    trained model and of every earlier state (``init_modules``, among them), the checkpoint step of each
    state (trained: the last, init: the first, step<t>: one between them, analysed with over_training)
    and the user's model directory of each step (none: the workflow saves them,
    results/<experiment>/hf/step_<t>)."""

    experiment: str
    settings: dict
    modules: list[str]
    init_modules: list[str]
    steps: dict[str, int]
    directories: dict[int, str] = field(default_factory=dict)

    def modules_at(self, state: str) -> list[str]:
        """The modules analysed at a state: all of them trained, ``init_modules`` at init and between."""
        return self.modules if state == "trained" else self.init_modules

    @property
    def states(self) -> list[str]:
        """The states whose detectors are analysed: trained and init, or trained alone when they are one checkpoint."""
        return list(STATES) if self.steps["init"] != self.steps["trained"] else ["trained"]

    @property
    def training(self) -> list[str]:
        """Every analysed state in step order: the training axis of over_training."""
        between = sorted((t, state) for state, t in self.steps.items() if state.startswith("step"))
        return ["init", *(state for _, state in between), "trained"] if len(self.states) == 2 else ["trained"]

    def directory(self, step: int) -> str:
        """The Hugging Face directory of the model at a checkpoint step."""
        return self.directories.get(step, f"results/{self.experiment}/hf/step_{step}")


def defaults() -> dict:
    """Every setting's default, read from the schema's ``$defs/language_model``."""
    with open(SCHEMA) as fh:
        props = yaml.safe_load(fh)["$defs"]["language_model"]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def expand_modules(specs: list[str], parameters: list[str], blocks: int | None = None) -> tuple[list[str], list[str]]:
    """(modules, unknown specs): roles expand to ``role.index`` per block, names must own a parameter.

    With ``blocks`` (a model of the user's, whose parameter names are known only once it is loaded),
    roles expand to that many blocks and names pass, both checked by the job that loads the model."""
    modules = {p.rpartition(".")[0] for p in parameters}
    out, unknown = [], []
    for spec in specs:
        if spec == "embedding":
            out.append("embedding.0")
        elif blocks is not None:
            out += [f"{spec}.{i}" for i in range(blocks)] if spec in ROLE_SUFFIX else [spec]
        elif spec in ROLE_SUFFIX:
            n = sum(m.endswith(ROLE_SUFFIX[spec]) for m in modules)
            out += [f"{spec}.{i}" for i in range(n)] if n else []
            unknown += [] if n else [spec]
        elif spec in modules:
            out.append(spec)
        else:
            unknown.append(spec)
    return out, unknown


def resolve(config: dict, experiments: dict, basedir: str) -> tuple[dict, list[str]]:
    """{experiment id: LanguageModel} and the problems found, each naming its key and the fix."""
    from entk.kinds.registry import get_kind

    base, errors, out = defaults(), [], {}
    for exp_id, given in (config.get("language_models") or {}).items():
        where = f"config key 'language_models.{exp_id}"
        exp = experiments.get(exp_id)
        if exp is None:
            errors.append(f"{where}': no experiment {exp_id!r}; key each entry by an experiment id")
            continue
        kind = get_kind(exp.kind) if exp.kind else None
        functions = set(kind.functions) if kind else set()
        s = {**base, **(given or {})}
        blocks, directories = None, {}
        if {"contexts", "directories", "resolve"} <= functions:
            if kind.check(exp.settings):
                continue  # the experiment's own check has named the problem
            blocks, problems = kind.function("resolve")(exp.settings, basedir, s["context_length"])
            errors += [f"config key 'experiments.{exp_id}.settings': {p}" for p in problems]
            directories = dict(zip(exp.steps, kind.function("directories")(exp.settings), strict=False))
            if problems:
                continue
        elif kind is None or not exp.trained_here or not {"corpus", "save_pretrained"} <= functions:
            errors.append(
                f"{where}': experiment {exp_id} must be trained here by a kind with a probe corpus and Hugging Face "
                "checkpoints (story_lm), or be a model of yours (kind hf_causal_lm)"
            )
            continue
        params = kind.parameters(exp.settings)
        modules, unknown = expand_modules(s["modules"], params, blocks)
        if unknown:
            errors.append(
                f"{where}.modules': {unknown} match no module; use roles mlp_out, attn_out, embedding or names of "
                f"modules with parameters, e.g. {params[1].rpartition('.')[0]}"
            )
        init_modules = modules
        if s.get("init_modules") is not None:
            init_modules, unknown = expand_modules(s["init_modules"], params, blocks)
            outside = sorted(set(init_modules) - set(modules))
            if unknown or outside:
                errors.append(
                    f"{where}.init_modules': {unknown or outside} are not among its modules {s['modules']}; "
                    "give a subset of modules (roles or names)"
                )
        metric = s["output_metric"]
        if metric != "unembedding" and not (metric.endswith(".npy") and os.path.isfile(os.path.join(basedir, metric))):
            errors.append(f"{where}.output_metric': {metric!r} must be unembedding or an existing (C, C) .npy file")
        if s["lanczos_steps"] < s["top_k"]:
            errors.append(
                f"{where}.lanczos_steps': {s['lanczos_steps']} steps give fewer than top_k = {s['top_k']} Ritz "
                "pairs; raise lanczos_steps or lower top_k"
            )
        if round(s["train_fraction"] * s["per_class"]) in (0, s["per_class"]):
            errors.append(
                f"{where}.per_class': {s['per_class']} contexts per class leave the train or test half empty at "
                f"train_fraction {s['train_fraction']}; raise per_class"
            )
        if s["over_training"] and len(exp.steps) < 2:
            errors.append(
                f"{where}.over_training': experiment {exp_id} has one checkpoint ({exp.steps}); the spectra over "
                "training need at least two (a list of model directories); set over_training: false"
            )
        between = {f"step{t}": t for t in exp.steps[1:-1]} if s["over_training"] else {}
        steps = {"trained": exp.steps[-1], "init": exp.steps[0], **between}
        out[exp_id] = LanguageModel(exp_id, s, modules, init_modules, steps, directories)
    for exp_id, exp in experiments.items():
        kind = get_kind(exp.kind) if exp.kind else None
        if kind is not None and "contexts" in kind.functions and exp_id not in (config.get("language_models") or {}):
            errors.append(
                f"config key 'experiments.{exp_id}': a model of kind {exp.kind} is analysed by the language-model "
                f"rules; add an entry language_models: {{{exp_id}: {{}}}} (its keys have defaults)"
            )
    paper = (config.get("paper") or {}).get("lm")
    if paper:
        for key, ids in (("experiment", [paper["experiment"]]), ("seeds", paper["seeds"])):
            missing = [e for e in ids if e not in out]
            if missing:
                errors.append(f"config key 'paper.lm.{key}': {missing} have no language_models entry; add one")
            elif not all(any(m.startswith("mlp_out.") for m in out[e].modules) for e in ids):
                errors.append(
                    f"config key 'paper.lm.{key}': Table 3 compares each block's MLP down-projection with PCA; "
                    "add mlp_out to the modules of its language_models entries"
                )
            elif key == "experiment" and not any(m.startswith("mlp_out.") for m in out[ids[0]].init_modules):
                errors.append(
                    f"config key 'language_models.{ids[0]}.init_modules': the Table-3 analogue's control is each "
                    "block's MLP down-projection at the initialisation; add mlp_out"
                )
    return out, errors
