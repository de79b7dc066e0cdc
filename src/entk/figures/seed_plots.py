"""The seed study's figure (docs/spec.md, "Seeds"): matplotlib only; returns a Figure."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from entk.analyses.modadd import grokking_epoch  # noqa: E402
from entk.analyses.seeds import AUTHOR_GROK_95  # noqa: E402


def fig_seeds(
    histories: Mapping[int, pd.DataFrame],
    curves: Mapping[int, pd.DataFrame],
    threshold: float = 0.5,
    author: Mapping[int, int] = AUTHOR_GROK_95,
) -> Figure:
    """Left: per seed, the first epochs with test accuracy ≥ ``threshold`` and ≥ 95 % (an open marker at
    the last epoch where never), beside the author's 95 % epochs. Right: each grokking seed's W_U overlap
    with its sum family, as a share of its maximum, against epochs since its grokking epoch.

    ``histories`` {seed: history (epoch, test_acc, …)}; ``curves`` {seed: (epoch, overlap, of)}.
    """
    if not histories:
        raise ValueError("no seeds to draw")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    seeds = sorted(histories)
    for i, seed in enumerate(seeds):
        history = histories[seed]
        last = int(history["epoch"].iloc[-1])
        for level, colour in ((threshold, "tab:blue"), (0.95, "tab:green")):
            epoch = grokking_epoch(history, level)
            reached = epoch is not None
            left.plot(
                i,
                epoch if reached else last,
                "o",
                color=colour,
                fillstyle="full" if reached else "none",
                label=f"test acc ≥ {level:.0%}" if i == 0 else None,
            )
    for j, epoch in enumerate(author[s] for s in sorted(author)):
        left.plot(len(seeds) + j, epoch, "D", color="black", label="author's run, ≥ 95 %" if j == 0 else None)
    left.set_xticks(
        range(len(seeds) + len(author)), [f"seed {s}" for s in seeds] + [f"author\nseed {s}" for s in sorted(author)]
    )
    left.set_ylabel("epoch")
    left.set_title("Grokking epoch per seed (open: not reached)")
    left.legend(fontsize=8)
    groks = {s: grokking_epoch(histories[s], threshold) for s in seeds}
    aligned = [s for s in seeds if groks[s] is not None and s in curves]
    for seed in aligned:
        curve = curves[seed]
        label = f"seed {seed} (grok {groks[seed]})"
        right.plot(curve["epoch"] - groks[seed], curve["overlap"] / curve["of"], label=label)
    right.axvline(0, linestyle=":", color="black")
    right.set_xlabel(f"epochs since grokking (test acc ≥ {threshold:.0%})")
    right.set_ylabel("W_U top-mode overlap with the sum family (share)")
    right.set_title("W_U eNTK overlap, aligned on grokking")
    if aligned:
        right.legend(fontsize=8)
    return fig
