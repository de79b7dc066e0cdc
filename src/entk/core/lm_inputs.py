"""Inputs for a user's causal LM: the model from a local directory, token-id contexts (N, T) from a file
or cut from a text file with the model's own tokenizer, and labels per context from a file.

Nothing is downloaded: directories are read with ``local_files_only``. Each bad input is refused with
one line that names the problem and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from entk.shared import load_torch

# Files of which a saved tokenizer has at least one (tokenizer.save_pretrained).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_model_dir(path: str | Path) -> Path:
    """A local Hugging Face causal-LM directory: it holds ``config.json`` and its architecture is a causal LM."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{path} has no config.json: give a Hugging Face model directory (save_pretrained writes config.json "
            "and the weights)"
        )
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(
            f"{path}: model_type {config.model_type!r} is not a causal language model "
            "(AutoModelForCausalLM has no class for it); give a decoder-only LM such as Gemma, Llama, GPT-2 or Pythia"
        )
    return path


def load_token_ids(path: str | Path) -> Tensor:
    """Token ids (N, T) from a ``.npy`` or ``.pt`` file of integers."""
    path = Path(path)
    if path.suffix == ".npy":
        ids = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix == ".pt":
        ids = load_torch(path, what="token ids file", yours=True)
    else:
        raise ValueError(f"{path}: token ids must be a .npy or .pt file of integers (N, T)")
    if ids.ndim != 2 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(
            f"{path}: token ids must be integers of shape (N contexts, T tokens), got {tuple(ids.shape)} {ids.dtype}"
        )
    return ids.long()


def load_tokenizer(model_dir: str | Path):
    """The tokenizer saved in a model directory (``local_files_only``)."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not any((model_dir / n).is_file() for n in TOKENIZER_FILES):
        raise ValueError(
            f"{model_dir} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save the model's tokenizer there "
            "(tokenizer.save_pretrained) or give token ids instead of text"
        )
    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def contexts_from_text(text: str | Path, tokenizer, context_length: int, n_contexts: int | None = None) -> Tensor:
    """Token ids (N, T) cut from a text file: the whole text tokenized without special tokens (no BOS, as the
    paper's contexts), then consecutive windows of ``context_length`` tokens, the first ``n_contexts`` of them."""
    text = Path(text)
    ids = tokenizer(text.read_text(), add_special_tokens=False)["input_ids"]
    n = len(ids) // context_length
    if n == 0 or (n_contexts is not None and n < n_contexts):
        raise ValueError(
            f"{text} gives {len(ids)} tokens, {n} context(s) of {context_length}; "
            f"{n_contexts or 1} needed: give more text or shorter contexts"
        )
    n = n if n_contexts is None else n_contexts
    return torch.tensor(ids[: n * context_length], dtype=torch.long).reshape(n, context_length)


def load_labels(path: str | Path, n_contexts: int) -> np.ndarray:
    """Labels per context (N,) from a ``.npy`` file or a text file with one label per line (e.g. a UPOS tag)."""
    path = Path(path)
    if path.suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
    elif path.suffix == ".json":
        labels = np.asarray(json.loads(path.read_text()))
    else:
        labels = np.asarray([line.strip() for line in path.read_text().splitlines() if line.strip()])
    if labels.ndim != 1 or len(labels) != n_contexts:
        raise ValueError(
            f"{path}: {labels.shape[0] if labels.ndim else 0} labels of shape {labels.shape}, one per context "
            f"needed ({n_contexts}); give one label per line, in the contexts' order"
        )
    return labels


def checked_ids(model: nn.Module, ids: Tensor) -> Tensor:
    """Token ids (N, T) on the model's device, refused when out of the vocabulary or longer than its positions."""
    ids = torch.as_tensor(ids)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0 or ids.is_floating_point():
        raise ValueError(
            f"token ids must be an integer tensor (N, T) with N, T ≥ 1, got {tuple(ids.shape)} {ids.dtype}"
        )
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(
            f"token ids must lie in [0, {vocab}) (the model's vocabulary), got [{int(ids.min())}, {int(ids.max())}]; "
            "tokenize with the model's own tokenizer"
        )
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and ids.shape[1] > positions:
        raise ValueError(
            f"contexts of {ids.shape[1]} tokens are longer than the model's {positions} positions "
            "(config.max_position_embeddings); cut them shorter"
        )
    return ids.to(next(model.parameters()).device)
