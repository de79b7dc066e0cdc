"""Eigenvector–feature metrics for TMS (docs/spec.md §1, "Eigenvector–feature indicator heatmap")."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def feature_indicator_map(eigenvectors: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Column-normalised |⟨z^a, e_i⟩| map (n, k) from eigenvectors (n·N, k) and features x (N, n).

    z^a is zero except block a (class-major rows a·N … a·N + N − 1), which holds x_a.
    """
    n_points, n_features = x.shape
    if eigenvectors.shape[0] != n_features * n_points:
        raise ValueError(
            f"eigenvectors have {eigenvectors.shape[0]} rows but a flattened kernel over {n_points} points "
            f"and {n_features} outputs has {n_features * n_points}"
        )
    blocks = eigenvectors.reshape(n_features, n_points, -1)
    e_norm = np.linalg.norm(eigenvectors, axis=0)
    x_norm = np.linalg.norm(x, axis=0)
    # A feature that is zero on every point has no indicator; its row stays zero.
    z = np.divide(x, x_norm, out=np.zeros_like(x, dtype=float), where=x_norm > 0)
    raw = np.abs(np.einsum("na,ank->ak", z, blocks)) / e_norm
    col = np.linalg.norm(raw, axis=0)
    return np.divide(raw, col, out=np.zeros_like(raw), where=col > 0)


def recovered_features(overlap: np.ndarray, top: int = 50, threshold: float = 0.9) -> int:
    """Number of features (rows of an (n, k) map) whose best overlap among the first ``top`` columns ≥ threshold."""
    return int((overlap[:, :top].max(axis=1) >= threshold).sum())


def matched_overlap(overlap: np.ndarray, top: int = 50) -> float:
    """Mean overlap after the optimal one-to-one matching of features to the first ``top`` columns."""
    block = overlap[:, :top]
    rows, cols = linear_sum_assignment(block, maximize=True)
    return float(block[rows, cols].mean())


def represented_features(w: np.ndarray, threshold: float = 0.75) -> int:
    """Number of features with (Wᵀ W)_ii ≥ threshold for W (m, n) (paper §1 sanity value)."""
    return int(((w * w).sum(axis=0) >= threshold).sum())
