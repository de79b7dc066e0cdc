"""The kind ``modadd_mlp``: the 1-layer MLP with x² activation on (a + b) mod p (docs/spec.md §2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from entk.kinds.kind import Kind, every, fraction, positive_ints, rates

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from entk.kinds.models import ModMLP


def build(settings: dict) -> ModMLP:
    """An untrained modular-addition MLP of the settings' shape."""
    from entk.kinds.models import ModMLP

    return ModMLP(settings["p"], settings["hidden"])


def inputs(settings: dict, seed: int, key: str) -> torch.Tensor:
    """All p² pairs one-hot(a) ‖ one-hot(b) (p², 2p), row a·p + b: the eNTK's inputs (docs/spec.md §2)."""
    from entk.kinds.models import modadd_inputs

    return modadd_inputs(settings["p"])


def train(
    settings: dict,
    seed: int,
    key: str,
    *,
    device: torch.device | str,
    checkpoint_steps: Sequence[int],
    save_checkpoint: Callable[[int, dict[str, Any]], None],
    resume: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Full-batch AdamW on MSE vs one-hot targets (docs/spec.md §2); resumable; one row per epoch."""
    from entk.kinds.models import ModMLP, modadd_inputs, modadd_labels, modadd_split
    from entk.kinds.training import train_modadd
    from entk.shared import generator

    p = settings["p"]
    gen = generator(seed, key)
    # Initialisation first, then the split: the order the grokking measurements used.
    model = ModMLP(p, settings["hidden"], generator=gen)
    train_idx, test_idx = modadd_split(p, settings["train_fraction"], gen)
    log(f"p={p} hidden={settings['hidden']}: {len(train_idx)} train / {len(test_idx)} test pairs on {device}")
    return train_modadd(
        model.to(device),
        modadd_inputs(p).to(device),
        modadd_labels(p).to(device),
        train_idx.to(device),
        test_idx.to(device),
        epochs=settings["epochs"],
        lr=settings["lr"],
        weight_decay=settings["weight_decay"],
        checkpoint_epochs=checkpoint_steps,
        save_checkpoint=save_checkpoint,
        resume=resume,
        log=log,
    )


def check(s: dict) -> list[str]:
    """One message per bad setting."""
    errors = positive_ints(s, ("p", "hidden", "epochs", "checkpoint_every"), "modadd_mlp")
    errors += fraction(s, "train_fraction", "modadd_mlp")
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
    errors += rates(s, "modadd_mlp")
    return errors


KIND = Kind(
    name="modadd_mlp",
    description="1-layer MLP with x² activation on (a + b) mod p, all p² one-hot pairs (docs/spec.md §2)",
    settings={
        "p": {
            "description": "The modulus; all p² pairs are the data set.",
            "type": "integer",
            "minimum": 5,
            "default": 29,
        },
        "hidden": {"description": "Hidden units.", "type": "integer", "minimum": 1, "default": 512},
        "train_fraction": {
            "description": "Share of the pairs in the fixed training split.",
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.7,
        },
        "epochs": {"description": "Full-batch AdamW steps.", "type": "integer", "minimum": 1, "default": 500},
        "lr": {"description": "AdamW learning rate.", "type": "number", "exclusiveMinimum": 0, "default": 0.05},
        "weight_decay": {"description": "AdamW weight decay.", "type": "number", "minimum": 0, "default": 0.01},
        "checkpoint_every": {
            "description": "Epochs between checkpoints; the last epoch always has one.",
            "type": "integer",
            "minimum": 1,
            "default": 10,
        },
    },
    functions={"build": build, "inputs": inputs, "train": train},
    checkpoint_steps=lambda s: every(s, "epochs", "checkpoint_every"),
    check=check,
    parameters=lambda s: ["fc1.weight", "fc2.weight"],
    sizes=lambda s: (s["p"] ** 2, s["p"]),
)
