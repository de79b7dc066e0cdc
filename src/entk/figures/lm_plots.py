"""Figure of the language-model detectors (docs/spec.md §4): matplotlib only; returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# (method, role, label, style) of each line: the trained model's eNTK of the MLP down-projection
# and PCA of the block's output, and the controls.
LINES = (
    ("entk", "mlp_out", "eNTK modes (MLP out)", {"color": "C0", "marker": "o"}),
    ("pca", "hidden", "PCA (block output)", {"color": "C1", "marker": "s"}),
    ("entk_init", "mlp_out", "eNTK modes, untrained", {"color": "C0", "ls": ":", "marker": "o", "mfc": "none"}),
    ("random_hidden", "hidden", "random directions", {"color": "0.5", "ls": "--"}),
)


def detector_figure(trained: pd.DataFrame, init: pd.DataFrame, classes: list[str]) -> Figure:
    """One panel per class and one for the macro average: test AP per block of each method in
    ``LINES``, and chance (the class's test prevalence). Tables: ``entk.analyses.lm_analysis.detector_table``."""
    both = pd.concat([trained, init.assign(method=init["method"] + "_init")])
    both = both[both["layer"].notna() & (both["layer"] >= 0)]
    panels = [*classes, "macro"]
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, panels, strict=False):
        sel = both if name == "macro" else both[both["class"] == name]
        for method, role, label, style in LINES:
            part = sel[(sel["method"] == method) & (sel["role"] == role)]
            curve = part.groupby("layer")["test_ap"].mean()
            ax.plot(curve.index.astype(int), curve.values, label=label, **style)
        ax.axhline(sel["chance"].mean(), color="k", lw=0.8, ls="-.", label="chance")
        ax.set_title(name, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("block")
    for ax in axes[:, 0]:
        ax.set_ylabel("test AP")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Detectors of the next word's class: eNTK modes vs PCA per block", fontsize=11)
    fig.tight_layout()
    return fig
