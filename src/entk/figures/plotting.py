"""Paper figures (matplotlib, Agg). Each function takes arrays and returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from entk.analyses.spectrum import find_cliffs  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "figure.dpi": 100})

CORRELATION_CMAP = "viridis"  # correlations in [0, 1], as in figure_1
CLIFF_STYLE = (("cliff 1: a, b families", "tab:blue"), ("cliff 2: a+b, a−b families", "tab:orange"))
FAMILY_STYLE = {"sum": ("a+b family", "tab:red"), "diff": ("a−b family", "tab:purple")}


def _spectrum(ax, eigenvalues: np.ndarray, label: str, cliff: int | None = None, color=None, start: int = 1) -> None:
    idx = np.arange(start, start + len(eigenvalues))
    line = ax.semilogy(idx, np.clip(eigenvalues, 1e-300, None), ".-", ms=2.5, lw=0.8, label=label, color=color)[0]
    if cliff is not None:
        ax.axvline(cliff + 0.5, color=line.get_color(), ls="--", lw=0.8, alpha=0.8)


def figure_1(panels: list[dict], betas: list[float], *, cliff_detector: dict | None = None) -> Figure:
    """TMS Figure 1 (paper §1): one column per model. Top row: the eigenvalues of the flattened eNTK itself (not
    importance-rescaled) on a linear axis, with every cliff that ``entk.analyses.spectrum.find_cliffs(eigenvalues,
    **cliff_detector)`` finds marked after its last mode; then one row per β of the column-normalised
    eigenvector–feature overlap map, feature 0 at the bottom.

    Each panel dict: m (hidden size), sparsity (S), eigenvalues (k,) descending, overlap {β: (n, k)} for each β.
    """
    if not panels or not betas:
        raise ValueError("figure_1 needs at least one model panel and one β")
    for j, panel in enumerate(panels):
        _check_keys(f"panel {j}", panel, ("m", "sparsity", "eigenvalues", "overlap"))
        missing = [b for b in betas if b not in panel["overlap"]]
        if missing:
            raise ValueError(f"panel {j} (m = {panel['m']}) has no overlap map for β = {missing}")
    ncol, nrow = len(panels), 1 + len(betas)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(3.5 * ncol, 2.4 * nrow),
        squeeze=False,
        constrained_layout=True,
        gridspec_kw={"height_ratios": [1.1] + [1] * len(betas)},
    )
    for j, panel in enumerate(panels):
        lam = np.asarray(panel["eigenvalues"], dtype=float)
        cliffs = find_cliffs(lam, **(cliff_detector or {}))
        _tms_spectrum(axes[0, j], lam, cliffs)
        axes[0, j].set_title(f"m = {panel['m']}, S = {panel['sparsity']:g}")
        for i, beta in enumerate(betas, start=1):
            overlap = _check_correlation(f"β = {beta:g} of panel {j}", panel["overlap"][beta], None)
            n, k = overlap.shape
            ax = axes[i, j]
            im = ax.imshow(
                overlap,
                origin="lower",
                aspect="auto",
                cmap=CORRELATION_CMAP,
                vmin=0,
                vmax=1,
                interpolation="nearest",
                extent=(0.5, k + 0.5, -0.5, n - 0.5),
            )
            ax.set_ylabel(f"β = {beta:g}\nfeature" if j == 0 else "feature")
            ax.set_xlabel("eigenvector index (rescaled kernel)" if i == nrow - 1 else "")
    label = r"column-normalised $|\langle z^a, e_i \rangle|$"
    fig.colorbar(im, ax=axes[1:, :].ravel().tolist(), shrink=0.9, pad=0.01, label=label)
    return fig


def _tms_spectrum(ax: Axes, lam: np.ndarray, cliffs: list) -> None:
    """Top-k eigenvalues as points on a linear axis from 0; each cliff a dashed line after its position,
    labelled with its position and ratio λ_p/λ_(p+1)."""
    idx = np.arange(1, lam.size + 1)
    ax.plot(idx, lam, "-", color="0.6", lw=0.7, zorder=1)
    ax.scatter(idx, lam, s=6, color="tab:blue", zorder=2, linewidths=0)
    ax.set_xlim(0, lam.size + 1)
    ax.set_ylim(0, 1.08 * lam.max())
    for c in cliffs:
        ax.axvline(c.position + 0.5, color="tab:red", ls="--", lw=1.0, zorder=0)
        # Right of the line, just above the foot of the drop: every later mode lies lower.
        ax.annotate(
            f"cliff after {c.position}\nratio {c.ratio:.2f}",
            xy=(c.position + 0.5, lam[c.position]),
            xytext=(3, 4),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=7,
            color="tab:red",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    ax.set_xlabel("eigenvalue index (un-rescaled eNTK)")
    ax.set_ylabel("eigenvalue λ")


def _check_cliffs(cliffs: tuple[slice, slice], k: int) -> None:
    """Raise ValueError unless cliffs are two contiguous, ordered, non-overlapping index slices within [0, k)."""
    if len(cliffs) != 2 or not all(isinstance(c, slice) for c in cliffs):
        raise ValueError(f"cliffs must be a pair of slices, got {cliffs!r}")
    for c in cliffs:
        if not all(isinstance(v, (int, np.integer)) for v in (c.start, c.stop)) or c.step not in (None, 1):
            raise ValueError(f"cliff slices need integer start and stop and unit step, got {c!r}")
        if not 0 <= c.start < c.stop <= k:
            raise ValueError(f"cliff {c!r} is empty or outside the {k} eigenvalues")
    if cliffs[0].stop > cliffs[1].start:
        raise ValueError(f"cliff 1 {cliffs[0]!r} must end before cliff 2 {cliffs[1]!r} starts")


def _check_spectrum(name: str, eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues (k,) as float with non-positive entries masked to NaN for a log axis."""
    lam = np.asarray(eigenvalues, dtype=float)
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError(f"spectrum {name!r} must be a non-empty finite 1-D array, got shape {lam.shape}")
    if not np.any(lam > 0):
        raise ValueError(f"spectrum {name!r} has no positive eigenvalue to draw on a log scale")
    return np.where(lam > 0, lam, np.nan)


def _check_correlation(name: str, corr: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    """Correlation matrix (K, k) with entries in [0, 1], of the given shape when one is given."""
    c = np.asarray(corr, dtype=float)
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"correlation {name} must be a non-empty 2-D (K, k) array, got shape {c.shape}")
    if shape is not None and c.shape != shape:
        raise ValueError(f"correlation {name} has shape {c.shape}, expected {shape} like the others")
    if not np.all(np.isfinite(c)) or c.min() < -1e-9 or c.max() > 1 + 1e-6:
        raise ValueError(f"correlation {name} must hold finite values in [0, 1]")
    return np.clip(c, 0.0, 1.0)


def _check_keys(what: str, d: dict, expected: tuple[str, ...]) -> None:
    """Raise ValueError unless dict d has exactly the expected keys."""
    if set(d) != set(expected):
        raise ValueError(f"{what} must have keys {list(expected)}, got {list(d)}")


def _mark_cliffs(ax: Axes, cliffs: tuple[slice, slice]) -> list[Patch]:
    """Shade both cliff index ranges (labelled for a legend), dash their boundaries; return the two shadings."""
    spans = [
        ax.axvspan(c.start - 0.5, c.stop - 0.5, color=color, alpha=0.13, lw=0, label=label)
        for c, (label, color) in zip(cliffs, CLIFF_STYLE, strict=False)
    ]
    for x in sorted({c.start - 0.5 for c in cliffs} | {c.stop - 0.5 for c in cliffs}):
        ax.axvline(x, color="0.35", ls="--", lw=0.7)
    return spans


def _mark_epoch(ax: Axes, epoch: int | None, label: str, ls: str) -> None:
    """Draw a labelled vertical line at an epoch, or nothing when epoch is None."""
    if epoch is not None:
        ax.axvline(epoch, color="0.25", ls=ls, lw=1.0, label=f"{label} (epoch {epoch})")


def _heatmap(ax: Axes, corr: np.ndarray) -> AxesImage:
    """Correlation heatmap (K, k): rows = frequency 1..K, columns = 1-based vector index, colour scale 0..1."""
    n_freq, n_vec = corr.shape
    im = ax.imshow(
        corr,
        aspect="auto",
        cmap=CORRELATION_CMAP,
        vmin=0,
        vmax=1,
        interpolation="nearest",
        origin="upper",
        extent=(0.5, n_vec + 0.5, n_freq + 0.5, 0.5),
    )
    ax.set_yticks(np.arange(1, n_freq + 1))
    ax.tick_params(axis="y", labelsize=6.5 if n_freq > 10 else 8)
    return im


def figure_2(spectra: dict[str, np.ndarray], cliffs: tuple[slice, slice]) -> Figure:
    """Figure 2: one log-scale panel per eNTK (name → (k,) descending eigenvalues), 0-based index, cliffs shaded."""
    if not spectra:
        raise ValueError("figure_2 needs at least one spectrum")
    lams = {name: _check_spectrum(name, lam) for name, lam in spectra.items()}
    _check_cliffs(cliffs, min(lam.size for lam in lams.values()))
    fig, axes = plt.subplots(1, len(lams), figsize=(3.4 * len(lams), 3.0), squeeze=False, constrained_layout=True)
    for ax, (name, lam) in zip(axes[0], lams.items(), strict=False):
        spans = _mark_cliffs(ax, cliffs)
        _spectrum(ax, lam, name, color="k", start=0)
        ax.set_title(f"{name} eNTK")
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel("eigenvalue λ")
        ax.set_xlim(-0.02 * lam.size - 1, 1.02 * lam.size)
    fig.legend(handles=spans, loc="outside lower center", ncols=2, frameon=False)
    return fig


def figure_3(
    history: pd.DataFrame, spectra: dict[int, np.ndarray], grok_epoch: int | None, cliffs: tuple[slice, slice]
) -> Figure:
    """Figure 3: train/test accuracy vs epoch (history rows) | full-eNTK spectra (epoch → (k,)) overlaid, log y."""
    missing = {"epoch", "train_acc", "test_acc"} - set(history.columns)
    if missing:
        raise ValueError(f"history lacks columns {sorted(missing)}")
    if len(history) == 0:
        raise ValueError("history is empty")
    acc = history[["train_acc", "test_acc"]].to_numpy(dtype=float)
    if not np.all(np.isfinite(acc)) or acc.min() < 0 or acc.max() > 1:
        raise ValueError("train_acc and test_acc must be fractions in [0, 1]")
    if not spectra:
        raise ValueError("figure_3 needs at least one epoch's spectrum")
    lams = {epoch: _check_spectrum(f"epoch {epoch}", spectra[epoch]) for epoch in sorted(spectra)}
    _check_cliffs(cliffs, min(lam.size for lam in lams.values()))

    fig, (ax_acc, ax_spec) = plt.subplots(1, 2, figsize=(9.6, 3.2), constrained_layout=True)
    ax_acc.plot(history["epoch"], history["train_acc"], lw=1.2, color="tab:blue", label="train")
    ax_acc.plot(history["epoch"], history["test_acc"], lw=1.2, color="tab:red", label="test")
    _mark_epoch(ax_acc, grok_epoch, "grokking", "--")
    ax_acc.set_ylim(0, 1.03)
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("train / test accuracy")
    ax_acc.legend(loc="center right", frameon=False)

    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(lams)))
    _mark_cliffs(ax_spec, cliffs)
    for color, (epoch, lam) in zip(colors, lams.items(), strict=False):
        _spectrum(ax_spec, lam, f"epoch {epoch}", color=color, start=0)
    ax_spec.set_xlabel("eigenvalue index")
    ax_spec.set_ylabel("eigenvalue λ")
    ax_spec.set_title("full eNTK spectrum during training")
    ax_spec.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
    return fig


def figure_4(raw: dict[str, np.ndarray], rotated: dict[str, np.ndarray]) -> Figure:
    """Figure 4: 2×2 heatmaps of (K, k) correlations; rows raw/rotated cliff-1 basis, columns a/b family."""
    _check_keys("raw", raw, ("a", "b"))
    _check_keys("rotated", rotated, ("a", "b"))
    shape = np.shape(raw["a"])
    rows = {"raw eigenvectors": raw, "rotated basis": rotated}
    xlabels = {"raw eigenvectors": "cliff-1 eigenvector index", "rotated basis": "rotated atom index"}
    fig, axes = plt.subplots(2, 2, figsize=(8.0, 5.2), sharey=True, constrained_layout=True)
    for i, (row, maps) in enumerate(rows.items()):
        for j, family in enumerate(("a", "b")):
            ax = axes[i, j]
            im = _heatmap(ax, _check_correlation(f"{row}[{family!r}]", maps[family], shape))
            ax.set_title(f"{row} vs {family}-family")
            ax.set_xlabel(xlabels[row])
        axes[i, 0].set_ylabel("frequency k")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85, pad=0.02, label="phase-insensitive correlation")
    return fig


def figure_5(maps: dict[int, dict[str, np.ndarray]]) -> Figure:
    """Figure 5: per epoch (column) heatmaps of rotated cliff-2 (K, k) correlations with a+b (top), a−b (bottom)."""
    if not maps:
        raise ValueError("figure_5 needs at least one epoch")
    epochs = sorted(maps)
    shape = None
    checked = {}
    for epoch in epochs:
        _check_keys(f"maps[{epoch}]", maps[epoch], ("sum", "diff"))
        for family in ("sum", "diff"):
            checked[epoch, family] = _check_correlation(f"maps[{epoch}][{family!r}]", maps[epoch][family], shape)
            shape = checked[epoch, family].shape
    fig, axes = plt.subplots(
        2,
        len(epochs),
        figsize=(2.2 * len(epochs) + 1.2, 5.0),
        sharex=True,
        sharey=True,
        squeeze=False,
        constrained_layout=True,
    )
    for j, epoch in enumerate(epochs):
        axes[0, j].set_title(f"epoch {epoch}")
        for i, family in enumerate(("sum", "diff")):
            im = _heatmap(axes[i, j], checked[epoch, family])
        axes[1, j].set_xlabel("rotated atom index")
    for i, family in enumerate(("sum", "diff")):
        axes[i, 0].set_ylabel(f"{FAMILY_STYLE[family][0]}\nfrequency k")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85, pad=0.01, label="phase-insensitive correlation")
    return fig


def figure_overlap(
    epochs: np.ndarray,
    overlaps: dict[str, np.ndarray],
    derivatives: dict[str, np.ndarray],
    n_family: int,
    grok_epoch: int | None,
    peak_epoch: int | None,
) -> Figure:
    """Cliff-2 subspace overlap ‖QᵀF‖²_F (E,) per family vs epochs (E,) | its per-epoch derivative (E,)."""
    ep = np.asarray(epochs, dtype=float)
    if ep.ndim != 1 or ep.size < 2 or not np.all(np.diff(ep) > 0):
        raise ValueError(f"epochs must be a strictly increasing 1-D array of length ≥ 2, got shape {ep.shape}")
    if n_family <= 0:
        raise ValueError(f"n_family must be positive, got {n_family}")
    _check_keys("overlaps", overlaps, ("sum", "diff"))
    _check_keys("derivatives", derivatives, ("sum", "diff"))
    series = {}
    for what, d in (("overlaps", overlaps), ("derivatives", derivatives)):
        for family in ("sum", "diff"):
            y = np.asarray(d[family], dtype=float)
            if y.shape != ep.shape or not np.all(np.isfinite(y)):
                raise ValueError(f"{what}[{family!r}] must be finite with shape {ep.shape}, got {y.shape}")
            series[what, family] = y
    ov = np.stack([series["overlaps", f] for f in ("sum", "diff")])
    if ov.min() < -1e-9 or ov.max() > n_family + 1e-6:
        raise ValueError(f"overlaps must lie in [0, n_family = {n_family}]")

    fig, (ax_ov, ax_d) = plt.subplots(1, 2, figsize=(8.4, 3.2), sharex=True, constrained_layout=True)
    for family, (label, color) in FAMILY_STYLE.items():
        ax_ov.plot(ep, series["overlaps", family], ".-", ms=3, lw=1.0, color=color, label=label)
        ax_d.plot(ep, series["derivatives", family], ".-", ms=3, lw=1.0, color=color, label=label)
    ax_ov.set_ylim(0, 1.03 * n_family)
    ax_ov.set_ylabel(rf"overlap $\|Q^\top F\|_F^2$ (of {n_family})")
    pct = ax_ov.secondary_yaxis("right", functions=(lambda y: 100 * y / n_family, lambda q: q * n_family / 100))
    pct.set_ylabel(f"% of {n_family}")
    ax_ov.set_title("cliff-2 subspace overlap")
    ax_d.axhline(0, color="0.6", lw=0.6)
    _mark_epoch(ax_d, peak_epoch, "derivative peak", ":")
    ax_d.set_ylabel("d overlap / d epoch")
    ax_d.set_title("rate of change")
    for ax in (ax_ov, ax_d):
        _mark_epoch(ax, grok_epoch, "grokking", "--")
        ax.set_xlabel("epoch")
        ax.legend(frameon=False, fontsize=7, loc="best")
    return fig
