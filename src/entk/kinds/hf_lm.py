"""The kind ``hf_causal_lm`` (docs/spec.md §4): a Hugging Face causal LM of yours, not trained here.

Its model is a local Hugging Face directory (``config.json`` + weights, read ``local_files_only``),
a list of them (the checkpoints of one run, e.g. Pythia revisions saved locally: the training
axis), or a config (``model_type`` and sizes) whose random weights the workflow draws from the
experiment's seed, trains for zero steps and saves as a directory of its own. Its probe contexts
are yours: token ids (N, T) from a file, or a text file cut into contexts with the model's
tokenizer, labelled per context from a file (any tagger's). Every context whose label is one of
the language_models entry's classes is kept, at most ``per_class`` per class, in file order; the
contexts do not depend on the draw.

``directories`` and ``resolve`` run while the workflow parses (they read ``config.json`` files and
the shapes of the input files, so that a bad entry fails before any job); the rest runs in jobs. The
workflow reads the kind while it parses any config, so torch is imported by the functions that use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from entk.kinds.kind import Kind

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn


def directories(settings: dict) -> list[str]:
    """The model directories of the settings, one per checkpoint step (none for a config)."""
    model = settings["model"]
    return [] if model is None else [model] if isinstance(model, str) else list(model)


def tokenizer_dir(settings: dict) -> str | None:
    """Where the tokenizer of a text input is: the ``tokenizer`` setting, else the last model directory."""
    dirs = directories(settings)
    return settings["tokenizer"] or (dirs[-1] if dirs else None)


def _config(settings: dict, basedir: str, problems: list[str]):
    """The transformers config of the model (its last directory's, or the ``config`` setting's)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from entk import lm

    configs = []
    for d in directories(settings):
        try:
            configs.append(
                AutoConfig.from_pretrained(lm.check_model_dir(os.path.join(basedir, d)), local_files_only=True)
            )
        except (ValueError, OSError) as e:
            problems.append(f"setting 'model': {e}")
    if settings["config"] is not None:
        given = dict(settings["config"])
        try:
            config = AutoConfig.for_model(given.pop("model_type"), **given)
        except (ValueError, TypeError) as e:
            problems.append(f"setting 'config': {e}; give model_type (e.g. llama, gpt2, gemma3_text) and its sizes")
            return None
        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            problems.append(
                f"setting 'config': model_type {config.model_type!r} is not a causal language model "
                "(AutoModelForCausalLM has no class for it); give a decoder-only LM such as llama, gpt2 or gemma3_text"
            )
            return None
        return config
    if not configs or len(configs) < len(directories(settings)):
        return None
    shapes = {(c.model_type, c.num_hidden_layers, c.hidden_size) for c in configs}
    if len(shapes) > 1:
        problems.append(
            "setting 'model': the directories hold different architectures (model_type, blocks, width) "
            f"{sorted(shapes)}; list the checkpoints of one run"
        )
    return configs[-1]


def resolve(settings: dict, basedir: str, context_length: int) -> tuple[int | None, list[str]]:
    """(blocks of the model, problems) of an entry's settings; each problem names its setting and the fix."""
    from entk import lm
    from entk.core.lm_inputs import TOKENIZER_FILES

    problems: list[str] = []
    config = _config(settings, basedir, problems)
    positions = getattr(config, "max_position_embeddings", None)
    path = lambda p: os.path.join(basedir, p)  # noqa: E731
    for key in ("tokens", "text", "labels"):
        if settings[key] is not None and not os.path.isfile(path(settings[key])):
            problems.append(f"setting '{key}': {settings[key]} does not exist (relative to {basedir})")
    if problems:
        return None, problems
    n, length = None, context_length
    if settings["tokens"] is not None:
        try:
            n, length = lm.load_token_ids(path(settings["tokens"])).shape
        except ValueError as e:
            return None, [f"setting 'tokens': {e}"]
    else:
        where = tokenizer_dir(settings)
        if where is None or not any(os.path.isfile(os.path.join(path(where), f)) for f in TOKENIZER_FILES):
            problems.append(
                f"setting 'text': a text input needs the model's tokenizer, and {where or 'no directory'} has none "
                f"(none of {', '.join(TOKENIZER_FILES)}); save it there (tokenizer.save_pretrained), give "
                "tokenizer: <directory>, or give token ids (tokens:) instead"
            )
    if positions is not None and length > positions:
        key = "tokens" if settings["tokens"] is not None else "text"
        problems.append(
            f"setting '{key}': contexts of {length} tokens are longer than the model's {positions} positions "
            "(max_position_embeddings); cut them shorter (the token ids' T, or context_length of the "
            "language_models entry)"
        )
    if n is not None and settings["n_contexts"] is not None:
        if settings["n_contexts"] > n:
            problems.append(
                f"setting 'n_contexts': {settings['n_contexts']} contexts asked, {settings['tokens']} holds {n}; "
                "lower n_contexts"
            )
        n = min(n, settings["n_contexts"])
    if n is not None:
        # The contexts of a text input are counted by the job that tokenizes it (it checks them there).
        try:
            lm.load_labels(path(settings["labels"]), n)
        except ValueError as e:
            problems.append(f"setting 'labels': {e}")
    return (None if config is None else int(config.num_hidden_layers)), problems


def build(settings: dict) -> nn.Module:
    """A model with random weights (from the global torch RNG) from the ``config`` setting."""
    from transformers import AutoConfig

    from entk import lm

    if settings["config"] is None:
        raise ValueError(
            "kind hf_causal_lm builds a model only from its config setting; a model directory is loaded, not built"
        )
    given = dict(settings["config"])
    return lm.load_causal_lm(AutoConfig.for_model(given.pop("model_type"), **given))


def train(
    settings: dict,
    seed: int,
    key: str,
    *,
    device: torch.device | str = "cpu",
    checkpoint_steps: Sequence[int] = (),
    save_checkpoint: Callable[[int, dict[str, Any]], None] = lambda step, state: None,
    resume: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """No training: the random weights of the config drawn from ``generator(seed, key)``, saved as step 0."""
    import pandas as pd
    import torch

    from entk.shared import generator

    state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator(seed, key))))
    try:
        model = build(settings)
    finally:
        torch.random.set_rng_state(state)
    log(f"hf_causal_lm: random weights of a {model.config.model_type} model, not trained")
    save_checkpoint(0, {"model": model.state_dict(), "step": 0, "history": [{"step": 0}]})
    return pd.DataFrame({"step": [0]})


def save_pretrained(model: nn.Module, directory: str) -> None:
    """The model as a Hugging Face directory (``entk.lm.load_causal_lm`` reads it)."""
    model.save_pretrained(directory)


def check_modules(model: nn.Module, specs: list[str], where: str) -> None:
    """Every module spec (``role.index`` or a name) resolves in the model; the error names the fix."""
    from entk import lm

    roles = lm.module_roles(model)
    names = dict(model.named_modules())
    arch = type(model).__name__
    for spec in specs:
        role, _, index = spec.rpartition(".")
        if role in roles and index.isdigit():
            if int(index) >= len(roles[role]):
                have = sorted(r for r, found in roles.items() if found)
                raise ValueError(
                    f"{where}: {arch} has {len(roles[role])} module(s) of role {role}, so {spec} does not exist; "
                    f"its roles are {have}: drop {role} from modules or name a module of the model"
                )
        elif spec not in names or not any(True for _ in names[spec].parameters(recurse=False)):
            raise ValueError(
                f"{where}: {spec!r} is no module with parameters of {arch}; use roles {sorted(roles)} or names such "
                f"as {roles['mlp_out'][0] if roles['mlp_out'] else next(iter(names))}"
            )


def contexts(settings: dict, lm_settings: dict, model_dir: str, modules: list[str], where: str) -> dict:
    """The probe contexts of the settings' files: ids (N, T), labels (N,) class indices, classes,
    and each context's row in the files (``index``); ``where`` names the modules' config key."""
    import numpy as np

    from entk import lm
    from entk.analyses.detectors import check_labels

    model = lm.load_causal_lm(model_dir)
    check_modules(model, modules, where)
    if settings["tokens"] is not None:
        ids = lm.load_token_ids(settings["tokens"])
        ids = ids if settings["n_contexts"] is None else ids[: settings["n_contexts"]]
    else:
        tokenizer = lm.load_tokenizer(tokenizer_dir(settings))
        ids = lm.contexts_from_text(settings["text"], tokenizer, lm_settings["context_length"], settings["n_contexts"])
    ids = lm.checked_ids(model, ids).cpu()
    labels = lm.load_labels(settings["labels"], len(ids)).astype(str)
    classes = list(lm_settings["classes"])
    keep, counts = [], dict.fromkeys(classes, 0)
    for i, label in enumerate(labels):
        if label in counts and counts[label] < lm_settings["per_class"]:
            counts[label] += 1
            keep.append(i)
    index = np.asarray(keep, dtype=np.int64)
    y = np.asarray([classes.index(labels[i]) for i in keep], dtype=np.int64)
    try:
        check_labels(y, len(y), classes, lm_settings["train_fraction"])
    except ValueError as e:
        raise ValueError(f"{settings['labels']}: {e}") from None
    return {"ids": ids.numpy()[index], "labels": y, "classes": np.asarray(classes), "index": index}


def check(s: dict) -> list[str]:
    """The shape of the settings; the files they name are checked by ``resolve``."""
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


def checkpoint_steps(s: dict) -> list[int]:
    """One step per model directory (the given steps, else 0, 1, 2, …); a config's random weights are step 0."""
    n = 1 if isinstance(s["model"], str) or s["model"] is None else len(s["model"])
    return list(s["steps"]) if s["steps"] is not None else list(range(n))


KIND = Kind(
    name="hf_causal_lm",
    description="a Hugging Face causal LM of yours, not trained here: a local directory, a list of them "
    "(checkpoints of one run) or a config (random weights), with your contexts and labels (docs/spec.md §4). "
    "It is loaded local_files_only with eager attention and needs a language_models entry; paths are "
    "relative to the working directory",
    settings={
        "model": {
            "description": "A Hugging Face model directory (config.json + weights, as save_pretrained writes it), "
            "or a list of them in training order (the checkpoints of one run, e.g. Pythia revisions saved "
            "locally: the training axis). Give model or config.",
            "oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "string"}}],
        },
        "steps": {
            "description": "The training step of each model directory (default 0, 1, 2, …), increasing.",
            "type": "array",
            "minItems": 1,
            "items": {"type": "integer", "minimum": 0},
        },
        "config": {
            "description": "Instead of model: a transformers config, model_type plus sizes (e.g. {model_type: "
            "llama, hidden_size: 64, num_hidden_layers: 2, ...}); its random weights come from the experiment's "
            "seed and seed_key, saved as results/<experiment>/hf/step_0.",
            "type": "object",
            "required": ["model_type"],
        },
        "tokens": {
            "description": "Token ids (N, T) of the probe contexts, a .npy or .pt file of integers. Give tokens or "
            "text.",
            "type": "string",
        },
        "text": {
            "description": "A text file cut into contexts of the language_models entry's context_length tokens by "
            "the model's tokenizer (no special tokens, consecutive windows).",
            "type": "string",
        },
        "tokenizer": {
            "description": "The directory of the text's tokenizer (default the last model directory).",
            "type": "string",
        },
        "n_contexts": {
            "description": "Use only the first n contexts of tokens or text (default all).",
            "type": "integer",
            "minimum": 1,
        },
        "labels": {
            "description": "One label per context (a .npy or .json array, or a text file with one per line, e.g. "
            "the UPOS tag of the word after it), compared as text with the entry's classes: contexts whose label "
            "is one of them are kept, at most per_class each, in file order.",
            "type": "string",
        },
    },
    functions={
        "build": build,
        "train": train,
        "save_pretrained": save_pretrained,
        "contexts": contexts,
        "directories": directories,
        "resolve": resolve,
    },
    checkpoint_steps=checkpoint_steps,
    check=check,
)
