"""Generic figures of an eigen file (matplotlib, Agg; no torch): spectra, spectra over training, phases.

Each function returns a Figure; the caller saves it. Cliffs are passed in (a ``cliffs_table`` or
{group: [positions]}) so that the figures never choose a cliff rule themselves.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from entk.analyses.analysis import EigenFile, phase_peak  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "figure.dpi": 100})

Cliffs = pd.DataFrame | dict[str, list[int]] | None
# Above this many groups the spectra share one panel instead of one panel each.
MAX_PANELS = 4


def _positive(lam: np.ndarray) -> np.ndarray:
    """Eigenvalues with non-positive entries (numerical noise in the tail) masked for a log axis."""
    lam = np.asarray(lam, dtype=float)
    return np.where(lam > 0, lam, np.nan)


def _cliff_positions(cliffs: Cliffs, group: str, step: int) -> list[tuple[int, float | None]]:
    """(position, ratio or None) of the cliffs to mark for one group at one step."""
    if cliffs is None:
        return []
    if isinstance(cliffs, pd.DataFrame):
        rows = cliffs[(cliffs["layer"] == group) & (cliffs["step"] == step)]
        return [(int(p), float(r)) for p, r in zip(rows["position"], rows["ratio"], strict=False)]
    return [(int(p), None) for p in cliffs.get(group, [])]


def _mark_cliffs(ax: Axes, marks: list[tuple[int, float | None]], color) -> None:
    for position, ratio in marks:
        ax.axvline(position + 0.5, color=color, ls="--", lw=0.8, alpha=0.7)
        if ratio is not None:
            ax.annotate(
                f"{position} (×{ratio:.2g})",
                (position + 0.5, 1),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2),
                textcoords="offset points",
                rotation=90,
                va="top",
                fontsize=7,
                color=color,
                # A cliff after index 1 sits on the steep first step of the curve: keep its label readable.
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5},
            )


def plot_spectra(eig: EigenFile, step: int = -1, cliffs: Cliffs = None, groups: list[str] | None = None) -> Figure:
    """Top-k spectrum (log scale) of each layer group at one checkpoint, cliffs marked (dashed, after position).

    step: a training step in ``eig.steps`` or a negative index (−1: the last checkpoint). One panel
    per group up to MAX_PANELS groups, else all groups overlaid as λ / λ₁ in one panel.
    """
    groups = list(eig.groups if groups is None else groups)
    t = eig.index(step)
    at = int(eig.steps[t])
    overlay = len(groups) > MAX_PANELS
    n = 1 if overlay else len(groups)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n + 0.6, 2.8), squeeze=False, constrained_layout=True)
    # Categorical colours while they stay distinguishable, a sequential map beyond.
    if len(groups) <= 10:
        colors = plt.get_cmap("tab10")(np.arange(len(groups)))
    else:
        colors = plt.get_cmap("viridis")(np.linspace(0, 1, len(groups)))
    for j, g in enumerate(groups):
        ax = axes[0, 0 if overlay else j]
        lam = _positive(eig.values[g][t])
        y = lam / lam[0] if overlay else lam
        idx = np.arange(1, len(lam) + 1)
        ax.semilogy(idx, y, ".-", ms=2.5, lw=0.8, color=colors[j], label=g)
        if not overlay:
            _mark_cliffs(ax, _cliff_positions(cliffs, g, at), colors[j])
            ax.set_title(g)
            ax.set_ylabel("eigenvalue λ" if j == 0 else None)
        ax.set_xlabel("eigenvalue index")
        ax.set_xlim(0, len(lam) + 1)
    if overlay:
        axes[0, 0].set_ylabel("λ / λ₁")
        axes[0, 0].legend(frameon=False, fontsize=7, ncol=2)
    fig.suptitle(f"eNTK spectra at step {at} ({eig.outputs})")
    return fig


def plot_spectrum_over_checkpoints(eig: EigenFile, layer: str, cliffs: Cliffs = None) -> Figure:
    """One group's spectrum at every checkpoint: lines coloured by step (left); log₁₀ λᵢ/λᵢ₊₁ over i × step (right).

    Cliffs of the final checkpoint are marked on the left (the right panel shows every gap).
    """
    if layer not in eig.values:
        raise KeyError(f"no group {layer!r}; groups are {eig.groups}")
    lam = _positive(eig.values[layer])
    steps = eig.steps
    t, k = lam.shape
    idx = np.arange(1, k + 1)
    fig, (ax_l, ax_h) = plt.subplots(1, 2, figsize=(8.4, 3.2), constrained_layout=True)
    norm = Normalize(steps.min(), steps.max() if t > 1 else steps.min() + 1)
    cmap = plt.get_cmap("viridis")
    for i in range(t):
        ax_l.semilogy(idx, lam[i], lw=0.9, color=cmap(norm(steps[i])))
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax_l, label="step")
    ax_l.set_xlabel("eigenvalue index")
    ax_l.set_ylabel("eigenvalue λ")
    ax_l.set_xlim(0, k + 1)
    ax_l.set_title(f"{layer}: spectrum at each checkpoint")
    # Cell edges halfway between checkpoints, so uneven step spacing is drawn to scale.
    mid = (steps[1:] + steps[:-1]) / 2 if t > 1 else np.array([])
    first_gap = steps[1] - steps[0] if t > 1 else 1
    last_gap = steps[-1] - steps[-2] if t > 1 else 1
    edges = np.r_[steps[0] - first_gap / 2, mid, steps[-1] + last_gap / 2]
    # Gap ratios rather than eigenvalues: the overall growth of the kernel cancels and a cliff forming
    # shows as a bright column. The colour scale stops at the 99th percentile so that one dominant gap
    # (e.g. an isolated top eigenvalue) does not wash out the others.
    gaps = np.log10(lam[:, :-1] / lam[:, 1:])
    top = np.nanpercentile(gaps, 99)
    mesh = ax_h.pcolormesh(np.arange(0.5, k), edges, gaps, cmap="magma", vmin=0, vmax=top, shading="flat")
    fig.colorbar(mesh, ax=ax_h, label="log₁₀ (λᵢ / λᵢ₊₁)", extend="max")
    ax_h.set_xlabel("gap after eigenvalue i")
    ax_h.set_ylabel("step")
    ax_h.set_title(f"{layer}: gap ratios over training")
    final = _cliff_positions(cliffs, layer, int(steps[-1]))
    _mark_cliffs(ax_l, final, "0.3")
    return fig


def plot_phases(
    table: pd.DataFrame,
    layers: list[str] | None = None,
    marks: dict[str, float] | None = None,
    step_label: str = "step",
) -> Figure:
    """Label-free phase detection (a ``phase_table``) vs step: overlaps, d overlap_final / d step, spectrum change.

    One colour per layer; each layer's detector peak (``phase_peak``, given in the legend) is a
    dotted line with a marker on the derivative; ``marks`` adds labelled reference steps
    (e.g. {"grokking": 85}), grey dashed.
    """
    layers = list(dict.fromkeys(table["layer"])) if layers is None else list(layers)
    if not layers:
        raise ValueError("the phase table has no layers to draw")
    fig, axes = plt.subplots(3, 1, figsize=(5.6, 6.6), sharex=True, constrained_layout=True)
    ax_ov, ax_d, ax_s = axes
    colors = plt.get_cmap("tab10")(np.arange(len(layers)) % 10)
    for g, color in zip(layers, colors, strict=False):
        rows = table[table["layer"] == g].sort_values("step")
        if rows.empty:
            raise KeyError(f"no phase rows for layer {g!r}")
        x = rows["step"].to_numpy()
        peak = phase_peak(table, g)
        label = f"{g} (k = {int(rows['k'].iloc[0])}): " + ("no transition" if peak is None else f"peak {peak}")
        ax_ov.plot(x, rows["overlap_final"], ".-", ms=3, lw=1.1, color=color)
        ax_ov.plot(x, rows["overlap_next"], ":", lw=1.0, color=color)
        ax_d.plot(x, rows["d_overlap_final"], ".-", ms=3, lw=1.1, color=color, label=label)
        ax_s.semilogy(x, _positive(rows["spectrum_change"].to_numpy()), ".-", ms=3, lw=1.1, color=color)
        if peak is not None:
            ax_d.plot(peak, rows.loc[rows["step"] == peak, "d_overlap_final"].iloc[0], "v", color=color, ms=6)
            for ax in axes:
                ax.axvline(peak, color=color, ls=":", lw=0.9)
    # Line styles are shared by all layers: one black proxy each instead of two legend rows per layer.
    ax_ov.plot([], [], "k.-", ms=3, lw=1.1, label="with the final checkpoint")
    ax_ov.plot([], [], "k:", lw=1.0, label="with the next checkpoint")
    for name, at in (marks or {}).items():
        for ax in axes:
            ax.axvline(at, color="0.45", ls="--", lw=0.9, label=name if ax is ax_d else None)
    ax_ov.set_ylim(-0.02, 1.02)
    ax_ov.set_ylabel("top-k overlap ‖QᵀQ′‖²/k")
    ax_ov.set_title("top-k eigenspace vs the final and the next checkpoint")
    ax_ov.legend(frameon=False, fontsize=7, loc="lower right")
    ax_d.axhline(0, color="0.7", lw=0.6)
    ax_d.set_ylabel(f"d overlap_final / d {step_label}")
    ax_d.set_title("rate of approach to the final eigenspace (peak: transition)")
    ax_d.legend(frameon=False, fontsize=7)
    ax_s.set_ylabel(f"mean |d log λ / d {step_label}|")
    ax_s.set_title("change of the top-k spectrum")
    ax_s.set_xlabel(step_label)
    return fig


def single_checkpoint_note(eig: EigenFile) -> Figure:
    """The phase figure of a view with one checkpoint: says why there is nothing to detect."""
    fig, ax = plt.subplots(figsize=(5.6, 1.6), constrained_layout=True)
    ax.axis("off")
    ax.text(
        0.5, 0.5, f"one checkpoint (step {int(eig.steps[0])}): phase detection needs several", ha="center", va="center"
    )
    return fig
