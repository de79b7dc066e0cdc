"""Paper figures (matplotlib, Agg). Each function takes arrays and returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "figure.dpi": 100})


def _spectrum(ax, eigenvalues: np.ndarray, label: str, cliff: int | None = None, color=None) -> None:
    idx = np.arange(1, len(eigenvalues) + 1)
    line = ax.semilogy(idx, np.clip(eigenvalues, 1e-300, None), ".-", ms=2.5, lw=0.8, label=label, color=color)[0]
    if cliff is not None:
        ax.axvline(cliff + 0.5, color=line.get_color(), ls="--", lw=0.8, alpha=0.8)


def figure_1(panels: list[dict], betas: list[float]) -> plt.Figure:
    """TMS Figure 1: columns = models; row 0 spectra per β, then one indicator heatmap row per β.

    Each panel dict: title, eigenvalues {β: (k,)}, cliffs {β: int}, overlap {β: (n, k)}.
    """
    ncol, nrow = len(panels), 1 + len(betas)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.6 * nrow), squeeze=False, constrained_layout=True)
    for j, panel in enumerate(panels):
        ax = axes[0, j]
        for beta in betas:
            lam = panel["eigenvalues"][beta]
            _spectrum(ax, lam / lam[0], f"β = {beta:g} (cliff {panel['cliffs'][beta]})", panel["cliffs"][beta])
        ax.set_title(panel["title"])
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel("λ / λ₁")
        ax.legend(frameon=False, fontsize=7)
        for i, beta in enumerate(betas, start=1):
            ax = axes[i, j]
            im = ax.imshow(panel["overlap"][beta], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.axvline(panel["cliffs"][beta] - 0.5, color="w", ls="--", lw=0.8)
            ax.set_title(f"β = {beta:g}: feature overlap")
            ax.set_xlabel("eigenvector index")
            ax.set_ylabel("feature")
    fig.colorbar(im, ax=axes[1:, :].ravel().tolist(), shrink=0.8, label="column-normalised |⟨z, e⟩|")
    return fig
