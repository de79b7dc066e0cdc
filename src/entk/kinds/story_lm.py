"""The kind ``story_lm`` (docs/spec.md §4): a small Gemma-3 trained here on generated stories.

A Gemma-3 decoder from ``transformers`` (``Gemma3TextConfig``, eager attention, float32, tied
unembedding) with a word-level tokenizer built in memory with ``tokenizers`` over the grammar's
vocabulary (``entk.kinds.stories``), so that what the workflow trains is an ordinary Hugging Face
checkpoint. Training: AdamW on next-word cross-entropy over windows of ``context_length + 1`` words
cut at random from a stream of training stories joined by an end-of-story token.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from entk.kinds import stories as grammar
from entk.kinds.registry import get_kind
from entk.shared import generator

SPECIALS = ("[PAD]", "[UNK]", "[EOS]")
HISTORY_COLUMNS = ["step", "train_loss", "test_loss", "test_acc"]
# The held-out stories of the test loss and the probe contexts come from their own streams.
_STREAMS = {"train": "story_lm train", "test": "story_lm test", "probe": "story_lm probe"}


def vocabulary() -> dict[str, int]:
    """Token id of every word: the special tokens, then the grammar's vocabulary in its order."""
    return {w: i for i, w in enumerate((*SPECIALS, *grammar.VOCABULARY))}


def tokenizer():
    """The word-level tokenizer (a ``transformers`` fast tokenizer): words split on whitespace."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocabulary(), unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


def config(settings: dict):
    """The ``Gemma3TextConfig`` of the settings (every layer full attention over the context)."""
    from transformers import Gemma3TextConfig

    s = settings
    cfg = Gemma3TextConfig(
        vocab_size=len(vocabulary()),
        hidden_size=s["d_model"],
        intermediate_size=s["d_mlp"],
        num_hidden_layers=s["n_layers"],
        num_attention_heads=s["n_heads"],
        num_key_value_heads=s["n_heads"],
        head_dim=s["d_model"] // s["n_heads"],
        query_pre_attn_scalar=s["d_model"] // s["n_heads"],
        max_position_embeddings=s["context_length"] + 1,
        sliding_window=s["context_length"] + 1,
        layer_types=["full_attention"] * s["n_layers"],
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    cfg._attn_implementation = "eager"
    return cfg


def build(settings: dict):
    """An untrained ``Gemma3ForCausalLM`` of the settings (weights from the global torch RNG)."""
    from transformers import Gemma3ForCausalLM

    return Gemma3ForCausalLM(config(settings)).float()


def seeded_build(settings: dict, gen: torch.Generator):
    """``build`` with its initial weights drawn from ``gen`` (the library draws from the global RNG)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
    try:
        return build(settings)
    finally:
        torch.random.set_rng_state(state)


def corpus(settings: dict, seed: int, key: str, split: str = "probe") -> list[tuple[list[str], list[str]]]:
    """The stories of one split ("train", "test", "probe") as (words, UPOS tags), each split its own stream."""
    n = settings[{"train": "train_stories", "test": "test_stories", "probe": "probe_stories"}[split]]
    gen = generator(seed, _STREAMS[split], key)
    texts = grammar.stories(n, int(torch.randint(0, 2**62, (), generator=gen)))
    return [(words, grammar.tags(words)) for words in texts]


def token_stream(texts: list[tuple[list[str], list[str]]]) -> Tensor:
    """Every story's token ids followed by the end-of-story token, as one stream (L,)."""
    vocab = vocabulary()
    return torch.tensor([vocab[w] for words, _ in texts for w in (*words, "[EOS]")])


def windows(stream: Tensor, length: int, starts: Tensor) -> Tensor:
    """Windows of ``length`` tokens from ``starts`` (B,) → (B, length)."""
    return stream[starts[:, None] + torch.arange(length)]


@torch.no_grad()
def _evaluate(model, stream: Tensor, length: int, n: int) -> tuple[float, float]:
    """Cross-entropy and next-word accuracy over ``n`` evenly spaced test windows."""
    starts = torch.linspace(0, len(stream) - length - 2, n).long()
    w = windows(stream, length + 1, starts)
    logits = model(input_ids=w[:, :-1]).logits
    loss = F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten()).item()
    return loss, (logits.argmax(-1) == w[:, 1:]).double().mean().item()


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
    """Train a fresh model → history (step, train_loss, test_loss, test_acc), one row per checkpoint.

    From ``generator(seed, key)``: the initial weights, then each step's window starts. Row t: the
    mean train loss of the steps since the previous row (NaN at step 0), and the test loss and
    next-word accuracy of the weights after t steps over 256 fixed windows of held-out stories.
    ``save_checkpoint(t, state)`` receives {"model", "optimizer", "generator", "step", "history"}
    (deep copies); ``resume`` = such a state continues bit-identically.
    """
    if msgs := get_kind("story_lm").check(settings):
        raise ValueError("; ".join(msgs))
    s, length = settings, settings["context_length"]
    gen = generator(seed, key)
    model = seeded_build(s, gen).to(device)
    train_stream = token_stream(corpus(s, seed, key, "train")).to(device)
    test_stream = token_stream(corpus(s, seed, key, "test")).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    rows, start = [], 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        gen.set_state(resume["generator"])
        start, rows = int(resume["step"]), [dict(r) for r in resume["history"]]
    wanted = set(checkpoint_steps)
    threads = torch.get_num_threads()
    # Ops on (batch, 32, 64) activations: a second thread on the shared 2-core machine only adds waits.
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        losses: list[float] = []
        for step in range(start, s["steps"] + 1):
            if step in wanted and not (resume is not None and step == start):
                model.eval()
                test_loss, test_acc = _evaluate(model, test_stream, length, 256)
                train_loss = sum(losses) / len(losses) if losses else math.nan
                rows.append({"step": step, "train_loss": train_loss, "test_loss": test_loss, "test_acc": test_acc})
                losses = []
                log(
                    f"story_lm step {step}/{s['steps']}: train loss {train_loss:.4f} | test loss {test_loss:.4f} "
                    f"next-word acc {test_acc:.3f}"
                )
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state()}
                save_checkpoint(step, {**copy.deepcopy(state), "step": step, "history": [dict(r) for r in rows]})
            if step == s["steps"]:
                break
            model.train()
            starts = torch.randint(0, len(train_stream) - length - 1, (s["batch_size"],), generator=gen)
            batch = windows(train_stream, length + 1, starts.to(device))
            loss = F.cross_entropy(model(input_ids=batch[:, :-1]).logits.flatten(0, 1), batch[:, 1:].flatten())
            if not math.isfinite(loss.item()):
                raise RuntimeError(
                    f"training diverged at step {step}: loss = {loss.item()} (lr {s['lr']:g}); try a lower lr"
                )
            losses.append(loss.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def save_pretrained(model, directory: str) -> None:
    """The model and its tokenizer as a Hugging Face checkpoint directory (``entk.lm.load_causal_lm`` reads it)."""
    model.save_pretrained(directory)
    tokenizer().save_pretrained(directory)
