"""Fourier feature families, grid Laplacians and the two-stage smoothness rotation (paper §2)."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def _check_p(p: int) -> None:
    """Reject moduli too small for a simple cycle on Z_p."""
    # At p = 2 the shifts by +1 and −1 coincide, so the cycle has a doubled edge and the
    # Laplacian formulas no longer describe a cycle graph; p ≥ 3 is also what makes both
    # cliffs fit inside p² eigen-indices.
    if p < 3:
        raise ValueError(f"p must be at least 3, got {p}")


def _orthonormal_columns(x: np.ndarray, name: str) -> np.ndarray:
    """Orthonormal basis (d, k) of the span of the k columns of x (d, k), via thin SVD."""
    d, k = x.shape
    if not 0 < k <= d:
        raise ValueError(f"{name} needs between 1 and {d} columns for a full column rank, got {k}")
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    # Dropping dependent columns silently would change k and so the meaning of the output
    # (the column count of a rotation, the maximum of an overlap); refuse instead.
    if s[-1] <= max(d, k) * np.finfo(np.float64).eps * s[0]:
        raise ValueError(f"{name} columns are linearly dependent; need full column rank")
    return u


def _check_operator(lap: np.ndarray, d: int, name: str) -> None:
    """Require a symmetric (d, d) matrix, since the eigensolver reads only one triangle."""
    if lap.shape != (d, d):
        raise ValueError(f"{name} must have shape ({d}, {d}) to match the basis, got {lap.shape}")
    if not np.allclose(lap, lap.T):
        raise ValueError(f"{name} must be symmetric")


def laplacians(p: int) -> dict[str, np.ndarray]:
    """Graph Laplacians on the p × p torus, each (p², p²), grid index i = a·p + b (paper §2, App. A).

    "a" = L ⊗ I and "b" = I ⊗ L penalise change along a and along b; "sum" penalises change
    along (1, 1), so its null space is the functions of a − b; "diff" penalises change along
    (1, −1), so its null space is the functions of a + b.
    """
    _check_p(p)
    eye = np.eye(p)
    # shift[x, y] = 1 iff y = x + 1 (mod p); each Laplacian uses a shift and its inverse, so
    # the choice of direction does not matter.
    shift = np.roll(eye, 1, axis=1)
    cycle = 2.0 * eye - shift - shift.T
    eye2 = np.eye(p * p)
    return {
        "a": np.kron(cycle, eye),
        "b": np.kron(eye, cycle),
        "sum": 2.0 * eye2 - np.kron(shift, shift) - np.kron(shift.T, shift.T),
        "diff": 2.0 * eye2 - np.kron(shift, shift.T) - np.kron(shift.T, shift),
    }


def fourier_families(p: int) -> dict[str, np.ndarray]:
    """Unit-norm Fourier families for v = a, b, a+b, a−b, each (p², 2K) with K = (p−1)//2 (paper §2).

    Column 2(k−1) is cos(2πk·v/p) and column 2(k−1)+1 is sin(2πk·v/p), for k = 1..K. For
    even p the cos-only frequency p/2 falls outside k ≤ K, so a family spans p − 2, not p − 1.
    """
    _check_p(p)
    a, b = np.divmod(np.arange(p * p), p)
    k = np.arange(1, (p - 1) // 2 + 1)
    families = {}
    for name, v in (("a", a), ("b", b), ("sum", a + b), ("diff", a - b)):
        phase = 2.0 * np.pi * np.outer(v, k) / p
        cols = np.empty((p * p, 2 * k.size))
        cols[:, 0::2] = np.cos(phase)
        cols[:, 1::2] = np.sin(phase)
        families[name] = cols / np.linalg.norm(cols, axis=0)
    return families


def family_correlation(vectors: np.ndarray, family: np.ndarray) -> np.ndarray:
    """Phase-insensitive correlation (K, m) of vectors (p², m) with a family (p², 2K) (paper §2).

    Entry (k−1, j) = sqrt(⟨cos_k, u_j⟩² + ⟨sin_k, u_j⟩²) with u_j the unit-normalised column j.
    """
    if vectors.ndim != 2 or family.ndim != 2 or vectors.shape[0] != family.shape[0]:
        raise ValueError(f"need vectors (d, m) and family (d, 2K) with equal d, got {vectors.shape}, {family.shape}")
    if family.shape[1] % 2:
        raise ValueError(f"family must hold (cos, sin) column pairs, got {family.shape[1]} columns")
    norms = np.linalg.norm(vectors, axis=0)
    if np.any(norms == 0):
        raise ValueError("vectors has a zero column, which has no direction to correlate")
    proj = family.T @ (vectors / norms)
    return np.hypot(proj[0::2], proj[1::2])


def smooth_rotation(basis: np.ndarray, L1: np.ndarray, L2: np.ndarray) -> np.ndarray:
    """Two-stage graph-smoothness rotation of basis (d, k) into an orthonormal (d, k) (paper App. A).

    Stage 1 orders the span by smoothness under L1; stage 2 re-rotates the smoother k//2
    columns by smoothness under L2; the other k − k//2 columns keep their stage-1 order.
    On the span of two Fourier families the first half is the family that L1 does not see:
    with (L_a, L_b) the b-family (functions of b are exactly smooth along a) then the a-family;
    with (L_sum, L_diff) the a−b family (constant along (1, 1)) then the a+b family.
    """
    if basis.ndim != 2:
        raise ValueError(f"basis must be 2-D (d, k), got shape {basis.shape}")
    d, k = basis.shape
    if k < 2:
        raise ValueError(f"basis needs at least 2 columns to split into halves, got {k}")
    _check_operator(L1, d, "L1")
    _check_operator(L2, d, "L2")
    q = _orthonormal_columns(basis, "basis")
    _, v1 = scipy.linalg.eigh(q.T @ L1 @ q)
    q1 = q @ v1
    half = q1[:, : k // 2]
    _, v2 = scipy.linalg.eigh(half.T @ L2 @ half)
    return np.hstack([half @ v2, q1[:, k // 2 :]])


def subspace_overlap(basis: np.ndarray, family: np.ndarray) -> float:
    """Overlap ‖QᵀF‖_F² in [0, f] of span(basis (d, k)) with the mean-centred family (d, f) (paper §2, v4)."""
    if basis.ndim != 2 or family.ndim != 2 or basis.shape[0] != family.shape[0]:
        raise ValueError(f"need basis (d, k) and family (d, f) with equal d, got {basis.shape}, {family.shape}")
    q = _orthonormal_columns(basis, "basis")
    f = _orthonormal_columns(family - family.mean(axis=0), "mean-centred family")
    return float(np.sum((q.T @ f) ** 2))


def cliff_slices(p: int) -> tuple[slice, slice]:
    """Eigen-index slices of cliff 1 (a, b families) and cliff 2 (a+b, a−b), 2(p−1) each (paper §2).

    Index 0 is one isolated eigenvalue and precedes both cliffs.
    """
    _check_p(p)
    size = 2 * (p - 1)
    return slice(1, 1 + size), slice(1 + size, 1 + 2 * size)
