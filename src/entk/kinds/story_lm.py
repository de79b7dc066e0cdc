"""The kind ``story_lm`` (docs/spec.md §4): a small Gemma-3 trained here on generated stories.

A Gemma-3 decoder from ``transformers`` (``Gemma3TextConfig``, eager attention, float32, tied
unembedding) with a word-level tokenizer built in memory with ``tokenizers`` over the grammar's
vocabulary (``entk.kinds.stories``), so that what the workflow trains is an ordinary Hugging Face
checkpoint. Training: AdamW on next-word cross-entropy over windows of ``context_length + 1`` words
cut at random from a stream of training stories joined by an end-of-story token. The workflow reads
the kind while it parses, so torch is imported by the functions that use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from entk.kinds import stories as grammar
from entk.kinds.kind import Kind, every, positive_ints, rates

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import Tensor

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
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
    try:
        return build(settings)
    finally:
        torch.random.set_rng_state(state)


def corpus(settings: dict, seed: int, key: str, split: str = "probe") -> list[tuple[list[str], list[str]]]:
    """The stories of one split ("train", "test", "probe") as (words, UPOS tags), each split its own stream."""
    import torch

    from entk.shared import generator

    n = settings[{"train": "train_stories", "test": "test_stories", "probe": "probe_stories"}[split]]
    gen = generator(seed, _STREAMS[split], key)
    texts = grammar.stories(n, int(torch.randint(0, 2**62, (), generator=gen)))
    return [(words, grammar.tags(words)) for words in texts]


def token_stream(texts: list[tuple[list[str], list[str]]]) -> Tensor:
    """Every story's token ids followed by the end-of-story token, as one stream (L,)."""
    import torch

    vocab = vocabulary()
    return torch.tensor([vocab[w] for words, _ in texts for w in (*words, "[EOS]")])


def windows(stream: Tensor, length: int, starts: Tensor) -> Tensor:
    """Windows of ``length`` tokens from ``starts`` (B,) → (B, length)."""
    import torch

    return stream[starts[:, None] + torch.arange(length)]


def _evaluate(model, stream: Tensor, length: int, n: int) -> tuple[float, float]:
    """Cross-entropy and next-word accuracy over ``n`` evenly spaced test windows."""
    import torch
    import torch.nn.functional as F

    starts = torch.linspace(0, len(stream) - length - 2, n).long()
    w = windows(stream, length + 1, starts)
    with torch.no_grad():
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
    import copy

    import pandas as pd
    import torch
    import torch.nn.functional as F

    from entk.shared import generator

    if msgs := check(settings):
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


def check(s: dict) -> list[str]:
    """One message per bad setting."""
    ints = (
        "d_model n_layers n_heads d_mlp context_length steps batch_size checkpoint_every "
        "train_stories test_stories probe_stories"
    ).split()
    errors = positive_ints(s, tuple(ints), "story_lm") + rates(s, "story_lm")
    if not errors and s["d_model"] % s["n_heads"]:
        errors.append(
            f"setting 'n_heads' of kind story_lm: d_model = {s['d_model']} is not divisible by {s['n_heads']} heads; "
            "choose n_heads dividing d_model"
        )
    return errors


_BLOCK = (
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
)


def parameters(settings: dict) -> list[str]:
    """Parameter names of the built Gemma-3 (tests check them against a built one)."""
    layers = [f"model.layers.{i}.{b}" for i in range(settings["n_layers"]) for b in _BLOCK]
    return ["model.embed_tokens.weight", *layers, "model.norm.weight"]


def _int(description: str, default: int) -> dict:
    return {"description": description, "type": "integer", "minimum": 1, "default": default}


KIND = Kind(
    name="story_lm",
    description="small Gemma-3 causal LM on generated stories with known parts of speech, saved as a "
    "Hugging Face checkpoint (docs/spec.md §4)",
    settings={
        "d_model": _int("Residual width C.", 64),
        "n_layers": _int("Decoder blocks.", 3),
        "n_heads": _int("Attention heads, dividing d_model.", 4),
        "d_mlp": _int("MLP hidden width.", 256),
        "context_length": _int("Training window in tokens.", 32),
        "steps": _int("AdamW steps.", 1500),
        "batch_size": _int("Windows per step.", 64),
        "lr": {"description": "AdamW learning rate.", "type": "number", "exclusiveMinimum": 0, "default": 3e-3},
        "weight_decay": {"description": "AdamW weight decay.", "type": "number", "minimum": 0, "default": 0.01},
        "checkpoint_every": _int(
            "Steps between checkpoints and history rows; step 0 and the last always have one.", 500
        ),
        "train_stories": _int("Generated training stories.", 4000),
        "test_stories": _int("Held-out stories of the test loss.", 200),
        "probe_stories": _int("Held-out stories the probe contexts are drawn from.", 20000),
    },
    functions={"build": build, "train": train, "corpus": corpus, "save_pretrained": save_pretrained},
    checkpoint_steps=lambda s: every(s, "steps", "checkpoint_every"),
    check=check,
    parameters=parameters,
)
