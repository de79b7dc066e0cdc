"""The kind ``modadd_transformer``: the paper's 1-layer Transformer on (a + b) mod p, all p²
sequences (a, b, '='), minibatch AdamW (docs/spec.md §3; the torch code is ``entk.kinds.transformer``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from entk.kinds.kind import Kind, every, fraction, positive_ints, rates

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from entk.kinds.transformer import Transformer

# Where the Transformer's random draws come from (docs/spec.md §3).
RNGS = ("entk", "author")


def build(settings: dict, generator: torch.Generator | None = None) -> Transformer:
    """An untrained Transformer of the settings' sizes (over the defaults; weights drawn from ``generator``)."""
    from entk.kinds.transformer import Transformer

    s = KIND.with_defaults(settings)
    return Transformer(s["p"], s["d_model"], s["n_heads"], s["d_head"], s["d_mlp"], generator=generator)


def inputs(settings: dict, seed: int = 0, key: str = "") -> torch.Tensor:
    """All p² sequences (a, b, '='), int64 (p², 3), row i = a·p + b (seed and key unused: fixed)."""
    from entk.kinds.transformer import sequences

    return sequences(KIND.with_defaults(settings)["p"])


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
    """Train a fresh Transformer of the settings (over the defaults; ``entk.kinds.transformer.fit``
    says how) → history, one row per logged epoch; a checkpoint epoch must be a logged one."""
    from entk.kinds.transformer import fit

    s = KIND.with_defaults(settings)
    if msgs := check(s):
        raise ValueError("; ".join(msgs))
    logged = KIND.checkpoint_steps(s)
    if stray := sorted(set(checkpoint_steps) - set(logged)):
        raise ValueError(
            f"checkpoint epochs {stray} have no history row: use multiples of log_every ({s['log_every']})"
        )
    return fit(
        s,
        seed,
        key,
        logged=logged,
        device=device,
        checkpoint_steps=checkpoint_steps,
        save_checkpoint=save_checkpoint,
        resume=resume,
        log=log,
    )


def check(s: dict) -> list[str]:
    """One message per bad setting."""
    errors = positive_ints(
        s, ("p", "d_model", "n_heads", "d_head", "d_mlp", "epochs", "batch_size", "log_every"), "modadd_transformer"
    )
    errors += fraction(s, "train_fraction", "modadd_transformer")
    if errors:
        return errors
    if s["p"] < 3:
        errors.append(f"setting 'p' of kind modadd_transformer: {s['p']} is too small; use a modulus ≥ 3")
    if s["d_model"] != s["n_heads"] * s["d_head"]:
        errors.append(
            f"setting 'd_model' of kind modadd_transformer: {s['d_model']} must equal n_heads·d_head = "
            f"{s['n_heads']}·{s['d_head']}; set d_head to d_model / n_heads"
        )
    errors += rates(s, "modadd_transformer")
    if s["rng"] not in RNGS:
        errors.append(
            f"setting 'rng' of kind modadd_transformer: {s['rng']!r} must be one of {list(RNGS)} "
            "(entk: streams keyed by the experiment; author: the published notebook's draws)"
        )
    return errors


def _int(description: str, default: int, minimum: int = 1) -> dict:
    return {"description": description, "type": "integer", "minimum": minimum, "default": default}


KIND = Kind(
    name="modadd_transformer",
    description="1-layer Transformer on (a + b) mod p, all p² sequences (a, b, '='), minibatch AdamW (docs/spec.md §3)",
    settings={
        "p": _int("The modulus; the data set is all p² sequences (a, b, '=').", 29, minimum=3),
        "d_model": _int("Residual width = n_heads · d_head.", 64),
        "n_heads": _int("Attention heads.", 4),
        "d_head": _int("Width of each head.", 16),
        "d_mlp": _int("MLP hidden width.", 256),
        "train_fraction": {
            "description": "Share of the sequences in the training split of a fixed shuffle.",
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.5,
        },
        "epochs": _int("Epochs of shuffled minibatch AdamW.", 4000),
        "lr": {"description": "AdamW learning rate.", "type": "number", "exclusiveMinimum": 0, "default": 3e-4},
        "weight_decay": {"description": "AdamW weight decay.", "type": "number", "minimum": 0, "default": 1.0},
        "batch_size": _int("Minibatch size.", 64),
        "log_every": _int("Epochs between history rows and checkpoints; the last epoch always has one.", 20),
        "rng": {
            "description": "Where the random draws come from. entk: the weights, the split and each epoch's "
            "shuffle from one stream keyed by the seed and the experiment's seed_key. author: the published "
            "notebook's draws (docs/spec.md §3): the weights from torch's generator seeded with the seed alone, "
            "the split of Python's random.seed(0) shuffle, and each epoch's batches as DataLoader(shuffle=True) "
            "draws them from that generator; seed 2 replays the paper's run.",
            "enum": list(RNGS),
            "default": "entk",
        },
    },
    functions={"build": build, "inputs": inputs, "train": train},
    # A checkpoint (and a history row) at every logged epoch.
    checkpoint_steps=lambda s: every(s, "epochs", "log_every"),
    check=check,
    parameters=lambda s: ["W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U"],
    # Every sequence (a, b, '='); logits over the p residues and the '=' token.
    sizes=lambda s: (s["p"] ** 2, s["p"] + 1),
)
