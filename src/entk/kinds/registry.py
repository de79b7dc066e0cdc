"""The registry of model kinds: what the workflow needs to know about a model it trains itself.

A kind bundles a model, its probe inputs, its training recipe and the checks of its settings, so
that one experiment entry in the config (``kind: tms`` plus settings) is a whole unit of work and
no rule names a model. The heavy parts (model, inputs, training) live in torch modules named by
``"module:function"`` strings and are imported only by the jobs that call them; this module, which
Snakemake imports while it parses the workflow, needs neither torch nor numpy.

Adding a kind: write its ``build``/``inputs``/``train`` functions in a module of this package (see
``entk.kinds.recipes``; ``train`` is a ``TrainRecipe``), register a ``Kind`` below, and describe its
settings under ``$defs`` in ``schemas/config.schema.yaml`` (tests/test_experiments.py holds the two
to one another).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # names for the annotations only: Snakemake imports this module without torch
    import pandas as pd
    import torch


class TrainRecipe(Protocol):
    """A training recipe: a kind's ``train`` function, or a user's ``weights: {train: file.py:function}``.

    Trains a fresh model from ``settings``, drawing from streams keyed by ``seed`` and ``key``; at
    each step of ``checkpoint_steps`` calls ``save_checkpoint(step, state)`` with a state holding the
    model's ``state_dict`` under "model"; given such a state as ``resume``, continues from it; returns
    the history (one row per checkpoint step).
    """

    def __call__(
        self,
        settings: dict,
        seed: int,
        key: str,
        *,
        device: torch.device | str,
        checkpoint_steps: Sequence[int],
        save_checkpoint: Callable[[int, dict[str, Any]], None],
        resume: dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
    ) -> pd.DataFrame: ...


@dataclass(frozen=True)
class Kind:
    """A registered model kind.

    ``defaults``: every setting with its default. ``functions``: "build" (settings → nn.Module),
    "inputs" (settings, seed, key → probe inputs (N, ...)), "train" (a ``TrainRecipe``) and optionally "importance"
    (settings → (C,) output importances, for ``output_weights: {importance: β}``), each as
    "module:function". ``checkpoint_steps`` (settings → steps with a checkpoint) and ``check``
    (settings → one message per bad setting) are plain Python: they run while the workflow parses.
    """

    name: str
    description: str
    defaults: Mapping
    functions: Mapping[str, str]
    checkpoint_steps: Callable[[dict], list[int]]
    check: Callable[[dict], list[str]] = field(default=lambda settings: [])
    # Parameter names of the built model (settings → names): layer groups are checked against them
    # while the workflow parses, before any training.
    parameters: Callable[[dict], list[str]] = field(default=lambda settings: [])
    # (samples N, outputs C) of the probe inputs and the model, where the settings fix them (None
    # where they do not): a view's top_k is checked against the kernel's dimension while parsing.
    sizes: Callable[[dict], tuple[int, int] | None] = field(default=lambda settings: None)

    def train(self) -> TrainRecipe:
        """The kind's training recipe, imported now."""
        return self.function("train")

    def function(self, role: str) -> Callable:
        """The kind's ``role`` function ("build", "inputs", "train", "importance"), imported now."""
        if role not in self.functions:
            raise ValueError(f"kind {self.name!r} has no {role!r} function")
        module, _, name = self.functions[role].partition(":")
        return getattr(import_module(module), name)

    def settings(self, given: Mapping | None) -> dict:
        """``given`` over the defaults; unknown keys are an error naming the valid ones."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown} for kind {self.name!r}; valid settings: {sorted(self.defaults)}"
            )
        return {**self.defaults, **given}


def _every(settings: dict, last: str, every: str) -> list[int]:
    """0, every, 2·every, …, last (last always included)."""
    return sorted({*range(0, settings[last] + 1, settings[every]), settings[last]})


def _positive_ints(settings: dict, keys: tuple[str, ...], kind: str) -> list[str]:
    return [
        f"setting '{key}' of kind {kind}: {settings[key]!r} must be a positive integer"
        for key in keys
        if not isinstance(settings[key], int) or isinstance(settings[key], bool) or settings[key] < 1
    ]


def _fraction(settings: dict, key: str, kind: str, lo_open=True, hi_open=True) -> list[str]:
    v = settings[key]
    ok = isinstance(v, int | float) and not isinstance(v, bool) and (0 < v if lo_open else 0 <= v)
    ok = ok and (v < 1 if hi_open else v <= 1)
    interval = f"{'(' if lo_open else '['}0, 1{')' if hi_open else ']'}"
    return [] if ok else [f"setting '{key}' of kind {kind}: {v!r} must lie in {interval}"]


def _rates(settings: dict, kind: str) -> list[str]:
    """The optimiser's lr (> 0) and weight_decay (≥ 0), each a number."""
    return [
        f"setting '{k}' of kind {kind}: {settings[k]!r} must be a {'positive' if k == 'lr' else 'non-negative'} number"
        for k in ("lr", "weight_decay")
        if not isinstance(settings[k], int | float)
        or isinstance(settings[k], bool)
        or settings[k] < 0
        or (k == "lr" and settings[k] == 0)
    ]


def _check_tms(s: dict) -> list[str]:
    errors = _positive_ints(s, ("n_features", "m", "n_points", "steps"), "tms")
    errors += [
        f"setting '{key}' of kind tms: {s[key]} must be at least 2"
        for key in ("n_features", "n_points")
        if not errors and s[key] < 2
    ]
    errors += _fraction(s, "importance_base", "tms", hi_open=False)
    # S = 1 makes every feature zero: an all-zero data set trains nothing and its metrics mean nothing.
    errors += _fraction(s, "sparsity", "tms", lo_open=False)
    if not isinstance(s["lr"], int | float) or s["lr"] <= 0:
        errors.append(f"setting 'lr' of kind tms: {s['lr']!r} must be a positive number")
    return errors


def _check_modadd_mlp(s: dict) -> list[str]:
    errors = _positive_ints(s, ("p", "hidden", "epochs", "checkpoint_every"), "modadd_mlp")
    errors += _fraction(s, "train_fraction", "modadd_mlp")
    if errors:
        return errors
    if s["p"] < 5:
        errors.append(f"setting 'p' of kind modadd_mlp: {s['p']} is too small; use an odd modulus ≥ 5")
    n_train = round(s["train_fraction"] * s["p"] ** 2)
    if not 1 <= n_train < s["p"] ** 2:
        errors.append(
            f"setting 'train_fraction' of kind modadd_mlp: {s['train_fraction']} of p² = {s['p'] ** 2} pairs "
            f"gives {n_train} training pairs; raise or lower it so both sets are non-empty"
        )
    # The (p², hidden) activations and their per-class gradients must fit a laptop, not only a node.
    if s["p"] ** 2 * s["hidden"] * 8 > 8 * 2**30:
        errors.append(
            f"setting 'hidden' of kind modadd_mlp: {s['hidden']} units on p² = {s['p'] ** 2} inputs need "
            f"{s['p'] ** 2 * s['hidden'] * 8 / 2**30:.0f} GiB per activation; use fewer units"
        )
    errors += _rates(s, "modadd_mlp")
    return errors


# Where the Transformer's random draws come from (docs/spec.md §3).
TRANSFORMER_RNGS = ("entk", "author")


def _check_transformer(s: dict) -> list[str]:
    errors = _positive_ints(
        s, ("p", "d_model", "n_heads", "d_head", "d_mlp", "epochs", "batch_size", "log_every"), "modadd_transformer"
    )
    errors += _fraction(s, "train_fraction", "modadd_transformer")
    if errors:
        return errors
    if s["p"] < 3:
        errors.append(f"setting 'p' of kind modadd_transformer: {s['p']} is too small; use a modulus ≥ 3")
    if s["d_model"] != s["n_heads"] * s["d_head"]:
        errors.append(
            f"setting 'd_model' of kind modadd_transformer: {s['d_model']} must equal n_heads·d_head = "
            f"{s['n_heads']}·{s['d_head']}; set d_head to d_model / n_heads"
        )
    errors += _rates(s, "modadd_transformer")
    if s["rng"] not in TRANSFORMER_RNGS:
        errors.append(
            f"setting 'rng' of kind modadd_transformer: {s['rng']!r} must be one of {list(TRANSFORMER_RNGS)} "
            "(entk: streams keyed by the experiment; author: the published notebook's draws)"
        )
    return errors


def _check_story_lm(s: dict) -> list[str]:
    ints = (
        "d_model n_layers n_heads d_mlp context_length steps batch_size checkpoint_every "
        "train_stories test_stories probe_stories"
    ).split()
    errors = [
        f"setting '{k}' of kind story_lm: {s[k]!r} must be a positive integer"
        for k in ints
        if not isinstance(s[k], int) or isinstance(s[k], bool) or s[k] < 1
    ]
    errors += _rates(s, "story_lm")
    if not errors and s["d_model"] % s["n_heads"]:
        errors.append(
            f"setting 'n_heads' of kind story_lm: d_model = {s['d_model']} is not divisible by {s['n_heads']} heads; "
            "choose n_heads dividing d_model"
        )
    return errors


def _check_hf_causal_lm(s: dict) -> list[str]:
    """The shape of the settings; the files they name are checked by the language_models entry."""
    k = "of kind hf_causal_lm"
    model, errors = s["model"], []
    if (model is None) == (s["config"] is None):
        errors.append(
            f"settings {k}: give exactly one of model (a Hugging Face directory, or a list of them in training "
            "order) or config ({model_type: ..., sizes}: random weights)"
        )
    if s["config"] is not None and not (
        isinstance(s["config"], dict) and isinstance(s["config"].get("model_type"), str)
    ):
        errors.append(f"setting 'config' {k}: {s['config']!r} must be a map with model_type (e.g. llama) and sizes")
    dirs = [model] if isinstance(model, str) else list(model or [])
    if s["steps"] is not None:
        steps = s["steps"]
        if len(steps) != len(dirs):
            errors.append(
                f"setting 'steps' {k}: {len(steps)} steps for {len(dirs)} model directories; give one per directory"
            )
        elif any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            errors.append(f"setting 'steps' {k}: {steps} must increase (the directories' order is the training axis)")
    if (s["tokens"] is None) == (s["text"] is None):
        errors.append(f"settings {k}: give exactly one of tokens (token ids (N, T), .npy or .pt) or text (a text file)")
    if s["labels"] is None:
        errors.append(f"setting 'labels' {k}: give a file with one label per context (.npy, .json, or one per line)")
    if s["tokenizer"] is not None and s["text"] is None:
        errors.append(f"setting 'tokenizer' {k}: only a text input is tokenized; drop it or give text")
    if s["n_contexts"] is not None and not (isinstance(s["n_contexts"], int) and s["n_contexts"] >= 1):
        errors.append(f"setting 'n_contexts' {k}: {s['n_contexts']!r} must be a whole number ≥ 1, or left out for all")
    return errors


def _hf_causal_lm_steps(s: dict) -> list[int]:
    """One step per model directory (the given steps, else 0, 1, 2, …); a config's random weights are step 0."""
    n = 1 if isinstance(s["model"], str) or s["model"] is None else len(s["model"])
    return list(s["steps"]) if s["steps"] is not None else list(range(n))


def _story_lm_parameters(settings: dict) -> list[str]:
    """Parameter names of the built Gemma-3 (tests check them against a built one)."""
    block = [
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "self_attn.q_norm.weight",
        "self_attn.k_norm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
        "pre_feedforward_layernorm.weight",
        "post_feedforward_layernorm.weight",
    ]
    layers = [f"model.layers.{i}.{b}" for i in range(settings["n_layers"]) for b in block]
    return ["model.embed_tokens.weight", *layers, "model.norm.weight"]


KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        "tms": Kind(
            name="tms",
            description="Toy Model of Superposition y = ReLU(WᵀW x + b) on a generated sparse data set "
            "(docs/spec.md §1)",
            defaults=MappingProxyType(
                {
                    "n_features": 50,
                    "m": 10,
                    "sparsity": 0.3,
                    "importance_base": 0.8,
                    "n_points": 500,
                    "steps": 5000,
                    "lr": 0.001,
                }
            ),
            functions=MappingProxyType(
                {
                    "build": "entk.kinds.recipes:tms_build",
                    "inputs": "entk.kinds.recipes:tms_inputs",
                    "train": "entk.kinds.recipes:tms_train",
                    "importance": "entk.kinds.recipes:tms_importance_weights",
                }
            ),
            checkpoint_steps=lambda s: [s["steps"]],
            check=_check_tms,
            parameters=lambda s: ["W", "b"],
            sizes=lambda s: (s["n_points"], s["n_features"]),
        ),
        "modadd_mlp": Kind(
            name="modadd_mlp",
            description="1-layer MLP with x² activation on (a + b) mod p, all p² one-hot pairs (docs/spec.md §2)",
            defaults=MappingProxyType(
                {
                    "p": 29,
                    "hidden": 512,
                    "train_fraction": 0.7,
                    "epochs": 500,
                    "lr": 0.05,
                    "weight_decay": 0.01,
                    "checkpoint_every": 10,
                }
            ),
            functions=MappingProxyType(
                {
                    "build": "entk.kinds.recipes:modadd_mlp_build",
                    "inputs": "entk.kinds.recipes:modadd_mlp_inputs",
                    "train": "entk.kinds.recipes:modadd_mlp_train",
                }
            ),
            checkpoint_steps=lambda s: _every(s, "epochs", "checkpoint_every"),
            check=_check_modadd_mlp,
            parameters=lambda s: ["fc1.weight", "fc2.weight"],
            sizes=lambda s: (s["p"] ** 2, s["p"]),
        ),
        "modadd_transformer": Kind(
            name="modadd_transformer",
            description="1-layer Transformer on (a + b) mod p, all p² sequences (a, b, '='), minibatch AdamW "
            "(docs/spec.md §3)",
            defaults=MappingProxyType(
                {
                    "p": 29,
                    "d_model": 64,
                    "n_heads": 4,
                    "d_head": 16,
                    "d_mlp": 256,
                    "train_fraction": 0.5,
                    "epochs": 4000,
                    "lr": 3e-4,
                    "weight_decay": 1.0,
                    "batch_size": 64,
                    "log_every": 20,
                    "rng": "entk",
                }
            ),
            functions=MappingProxyType(
                {
                    "build": "entk.kinds.transformer:build",
                    "inputs": "entk.kinds.transformer:inputs",
                    "train": "entk.kinds.transformer:train",
                }
            ),
            # A checkpoint (and a history row) at every logged epoch.
            checkpoint_steps=lambda s: _every(s, "epochs", "log_every"),
            check=_check_transformer,
            parameters=lambda s: ["W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U"],
            # Every sequence (a, b, '='); logits over the p residues and the '=' token.
            sizes=lambda s: (s["p"] ** 2, s["p"] + 1),
        ),
        "story_lm": Kind(
            name="story_lm",
            description="small Gemma-3 causal LM on generated stories with known parts of speech, saved as a "
            "Hugging Face checkpoint (docs/spec.md §4)",
            defaults=MappingProxyType(
                {
                    "d_model": 64,
                    "n_layers": 3,
                    "n_heads": 4,
                    "d_mlp": 256,
                    "context_length": 32,
                    "steps": 1500,
                    "batch_size": 64,
                    "lr": 3e-3,
                    "weight_decay": 0.01,
                    "checkpoint_every": 500,
                    "train_stories": 4000,
                    "test_stories": 200,
                    "probe_stories": 20000,
                }
            ),
            functions=MappingProxyType(
                {
                    "build": "entk.kinds.story_lm:build",
                    "train": "entk.kinds.story_lm:train",
                    "corpus": "entk.kinds.story_lm:corpus",
                    "save_pretrained": "entk.kinds.story_lm:save_pretrained",
                }
            ),
            checkpoint_steps=lambda s: _every(s, "steps", "checkpoint_every"),
            check=_check_story_lm,
            parameters=_story_lm_parameters,
        ),
        "hf_causal_lm": Kind(
            name="hf_causal_lm",
            description="a Hugging Face causal LM of yours, not trained here: a local directory, a list of them "
            "(checkpoints of one run) or a config (random weights), with your contexts and labels (docs/spec.md §4)",
            defaults=MappingProxyType(
                {
                    "model": None,
                    "steps": None,
                    "config": None,
                    "tokens": None,
                    "text": None,
                    "tokenizer": None,
                    "n_contexts": None,
                    "labels": None,
                }
            ),
            functions=MappingProxyType(
                {
                    "build": "entk.kinds.hf_lm:build",
                    "train": "entk.kinds.hf_lm:train",
                    "save_pretrained": "entk.kinds.hf_lm:save_pretrained",
                    "contexts": "entk.kinds.hf_lm:contexts",
                    "directories": "entk.kinds.hf_lm:directories",
                    "resolve": "entk.kinds.hf_lm:resolve",
                }
            ),
            checkpoint_steps=_hf_causal_lm_steps,
            check=_check_hf_causal_lm,
        ),
    }
)


def get_kind(name: str) -> Kind:
    """The registered kind ``name``; an unknown name is an error that lists the known ones."""
    if name not in KINDS:
        raise ValueError(
            f"unknown model kind {name!r}; registered kinds: {sorted(KINDS)} (or use model: file.py:function)"
        )
    return KINDS[name]
