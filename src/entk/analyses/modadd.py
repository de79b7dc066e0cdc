"""Modular-addition analyses on eNTK eigenvectors: rotations, family overlaps, grokking (paper §2)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from entk.analyses.rotation import (
    cliff_slices,
    family_correlation,
    fourier_families,
    laplacians,
    smooth_rotation,
    subspace_overlap,
)


def grokking_epoch(history: pd.DataFrame, threshold: float = 0.5) -> int | None:
    """First epoch whose test accuracy reaches ``threshold`` (None if it never does)."""
    hit = history.loc[history["test_acc"] >= threshold, "epoch"]
    return int(hit.iloc[0]) if len(hit) else None


def cliff1_maps(vectors: np.ndarray, p: int) -> dict[str, np.ndarray]:
    """Cliff 1 of a layer-1 kernel, eigenvectors (p², k): raw and (L_a, L_b)-rotated correlations.

    Returns "raw_a", "raw_b", "rot_a", "rot_b", each (K, 2(p−1)) with K = (p−1)/2 frequencies.
    """
    cliff1, _ = cliff_slices(p)
    basis = vectors[:, cliff1]
    lap, fam = laplacians(p), fourier_families(p)
    rotated = smooth_rotation(basis, lap["a"], lap["b"])
    return {
        f"{kind}_{v}": family_correlation(b, fam[v])
        for kind, b in (("raw", basis), ("rot", rotated))
        for v in ("a", "b")
    }


def cliff2_maps(vectors: np.ndarray, p: int) -> dict[str, np.ndarray]:
    """Cliff 2 of the full kernel (p², k), rotated with (L_sum, L_diff): correlations with the
    a+b ("sum") and a−b ("diff") families, each (K, 2(p−1))."""
    _, cliff2 = cliff_slices(p)
    lap, fam = laplacians(p), fourier_families(p)
    rotated = smooth_rotation(vectors[:, cliff2], lap["sum"], lap["diff"])
    return {v: family_correlation(rotated, fam[v]) for v in ("sum", "diff")}


def overlap_curve(epochs: np.ndarray, vectors: np.ndarray, p: int) -> pd.DataFrame:
    """Sum/diff subspace overlaps of cliff 2 per epoch, from eigenvectors (E, p², k) (paper v4).

    Columns: epoch, overlap_sum, overlap_diff (‖QᵀF‖²_F out of p − 1), their central-difference
    derivatives per epoch d_sum, d_diff.
    """
    _, cliff2 = cliff_slices(p)
    fam = fourier_families(p)
    rows = [
        {
            "epoch": int(e),
            "overlap_sum": subspace_overlap(v[:, cliff2], fam["sum"]),
            "overlap_diff": subspace_overlap(v[:, cliff2], fam["diff"]),
        }
        for e, v in zip(epochs, vectors, strict=False)
    ]
    table = pd.DataFrame(rows)
    for v in ("sum", "diff"):
        table[f"d_{v}"] = np.gradient(table[f"overlap_{v}"].to_numpy(), table["epoch"].to_numpy())
    return table


def derivative_peak(curve: pd.DataFrame, family: str = "sum") -> int:
    """Epoch at which the overlap derivative of ``family`` peaks."""
    return int(curve["epoch"].iloc[int(np.argmax(curve[f"d_{family}"].to_numpy()))])


def best_family_match(maps: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For atoms scored against several families {name: (K, m)}: best correlation (m,), its
    family index (m,) into ``list(maps)`` and its frequency 1..K (m,)."""
    stacked = np.stack(list(maps.values()))  # (F, K, m)
    n_fam, n_freq, m = stacked.shape
    flat = stacked.reshape(n_fam * n_freq, m)
    best = flat.argmax(axis=0)
    return flat[best, np.arange(m)], best // n_freq, best % n_freq + 1
