"""Figures of the 1-layer Transformer analyses (paper §3): matplotlib only; each function returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

FAMILY_LABELS = {
    "a": "a",
    "b": "b",
    "sum": "a+b",
    "diff": "a−b",
    "axis_sum": "axis-sum",
    "axis_diff": "axis-diff",
}


def fig_transformer_layers(table: pd.DataFrame, keys: list[int] | None = None) -> Figure:
    """Table-2 heatmap: one panel per eigenvector group, tensors × families, colour = overlap / its maximum.

    ``table`` has the columns of ``entk.analyses.transformer_analysis.layer_table`` (tensor, group, family,
    overlap, of); each cell is annotated with the overlap itself. ``keys`` (the key frequencies) go in the title.
    """
    if table.empty:
        raise ValueError("the overlap table is empty: nothing to draw")
    tensors = list(dict.fromkeys(table["tensor"]))
    families = list(dict.fromkeys(table["family"]))
    groups = list(dict.fromkeys(table["group"]))
    fig, axes = plt.subplots(
        1,
        len(groups),
        figsize=(0.55 * len(families) * len(groups) + 1.6, 0.32 * len(tensors) + 1.3),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    for ax, group in zip(axes[0], groups, strict=False):
        part = table[table["group"] == group].set_index(["tensor", "family"])
        value = np.array([[part.loc[(t, f), "overlap"] for f in families] for t in tensors])
        most = np.array([[part.loc[(t, f), "of"] for f in families] for t in tensors])
        share = value / most
        im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        for i in range(len(tensors)):
            for j in range(len(families)):
                # Dark text on the bright end of viridis, white elsewhere.
                ax.text(
                    j,
                    i,
                    f"{value[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="black" if share[i, j] > 0.6 else "white",
                )
        ax.set_xticks(range(len(families)), [FAMILY_LABELS.get(f, f) for f in families], rotation=45, ha="right")
        ax.set_yticks(range(len(tensors)), tensors)
        ax.set_title(f"eigenvectors {group} (of {int(most.max())})", fontsize=9)
        ax.tick_params(length=0)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9, label=r"overlap $\|Q^\top F\|_F^2$ / its maximum")
    title = "per-tensor eNTK (all_mean) vs feature families"
    fig.suptitle(title + (f" at key frequencies {', '.join(map(str, keys))}" if keys else ""), fontsize=10)
    return fig


def fig_transformer(
    history: pd.DataFrame,
    curve: pd.DataFrame,
    *,
    peak: int,
    grok: int | None,
    threshold: float,
    n_top: int = 5,
) -> Figure:
    """Accuracy curves (top) and the W_U eNTK top-``n_top`` overlap with the key-frequency sum family and its
    derivative (bottom), sharing the epoch axis; the grokking epoch and the derivative peak are marked.

    ``history``: epoch, train_acc, test_acc; ``curve``: epoch, overlap, of, d_overlap (``overlap_curve``).
    """
    fig, (acc_ax, ov_ax) = plt.subplots(2, 1, figsize=(6.4, 5.0), sharex=True, constrained_layout=True)
    acc_ax.plot(history["epoch"], history["train_acc"], color="tab:blue", lw=1.2, label="train")
    acc_ax.plot(history["epoch"], history["test_acc"], color="tab:orange", lw=1.2, label="test")
    acc_ax.axhline(threshold, color="0.6", lw=0.7, ls=":")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    acc_ax.set_ylim(-0.02, 1.02)
    acc_ax.set_ylabel("accuracy")
    ov_ax.plot(curve["epoch"], curve["overlap"], color="tab:red", lw=1.2, label=f"overlap, top {n_top} (left)")
    ov_ax.set_ylabel(f"overlap with a+b (of {int(curve['of'].iloc[0])})")
    ov_ax.set_xlabel("epoch")
    d_ax = ov_ax.twinx()
    d_ax.plot(curve["epoch"], curve["d_overlap"], color="tab:green", lw=0.9, label="d overlap / d epoch (right)")
    d_ax.set_ylabel("derivative per epoch")
    for ax in (acc_ax, ov_ax):
        if grok is not None:
            ax.axvline(grok, color="k", ls="--", lw=0.8, label=f"grokking (test ≥ {threshold:.0%}): {grok}")
        ax.axvline(peak, color="tab:green", ls=":", lw=1.0, label=f"derivative peak: {peak}")
    if grok is None:
        # An empty legend entry keeps the missing transition visible in the figure itself.
        acc_ax.plot([], [], " ", label=f"test accuracy never ≥ {threshold:.0%}")
    acc_ax.legend(frameon=False, fontsize=7, loc="center right")
    lines = ov_ax.get_legend_handles_labels()
    more = d_ax.get_legend_handles_labels()
    ov_ax.legend(lines[0] + more[0], lines[1] + more[1], frameon=False, fontsize=7, loc="center right")
    acc_ax.set_title("1-layer Transformer: grokking and the W_U eNTK")
    return fig
