"""Cliffs in an eigenvalue spectrum (shared/paper.md §1 and §2): numpy only, importable without torch.

A cliff after position p is a drop λ_p → λ_(p+1) (1-based: p eigenvalues lie above it) that stands
out from the spectrum around it. Two rules:

- ``cliff``: the position of the largest ratio λ_p/λ_(p+1). Simple, and right when the cliff is the
  largest drop in the window (the modular-addition spectra), wrong when a bigger drop lies elsewhere:
  the un-rescaled TMS spectrum of (m = 10, S = 0.9) has its largest ratio (2.38) after 31, while the
  one-mode-per-feature cliff (1.80) is after 50.
- ``find_cliffs`` / ``detect_cliff``: each drop is compared with the drops around it. The drop after p
  is measured as the local power-law exponent

      a_p = log(λ_p / λ_(p+1)) / log((p + 1) / p),

  the slope of log λ against log(index) across that gap, so that a power law λ_i ∝ i^(−α) has the
  same a_p = α everywhere and so never shows a cliff, however steep its head. Its score is a robust
  z-score against the ``window`` drops on either side (itself left out):

      score_p = (a_p − median) / max(1.4826 · MAD, min_spread)

  (median and MAD = median absolute deviation of those neighbours; 1.4826·MAD estimates a standard
  deviation; ``min_spread`` keeps a plateau of tied eigenvalues, whose MAD is ≈ 0, from making any
  small drop after it infinitely prominent). Median and MAD ignore a few large neighbours, so two
  cliffs close together both stand out. A drop is a cliff when score_p ≥ ``min_score`` and its ratio
  λ_p/λ_(p+1) ≥ ``min_ratio``; of adjacent positions that both qualify (a cliff spread over two
  drops) the higher score is kept.

Eigenvalues at or below ``floor`` · max|λ| (zeros, small negatives of round-off) are raised to that
floor before the logarithm, so a drop to numerical zero (a rank) is a finite, very large cliff.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# 1.4826·MAD is the standard deviation of normally distributed values.
_MAD_TO_SD = 1.4826


class Cliff(NamedTuple):
    """A drop after ``position`` eigenvalues (1-based count above it), its ratio λ_position/λ_position+1 and its
    prominence score (see the module docstring)."""

    position: int
    ratio: float
    score: float


def _as_values(values) -> np.ndarray:
    """A 1-D float64 copy of ``values`` (numpy array, list or CPU/GPU tensor); errors name what is wrong."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    lam = np.asarray(values, dtype=np.float64)
    if lam.ndim != 1:
        raise ValueError(f"eigenvalues must be a 1-D array, got shape {lam.shape}")
    if lam.size < 2:
        raise ValueError(f"a cliff needs at least two eigenvalues, got {lam.size}")
    bad = ~np.isfinite(lam)
    if bad.any():
        raise ValueError(
            f"eigenvalues must be finite: {int(bad.sum())} of {lam.size} are NaN or infinite "
            f"(first at index {int(np.argmax(bad))}); check the eigensolver's input"
        )
    return lam


def cliff(eigenvalues, max_index: int | None = None) -> int:
    """Number of eigenvalues above the largest ratio gap λ_i/λ_{i+1} among the first ``max_index``.

    ``eigenvalues`` (k,) descending; values below the smallest positive float count as that float."""
    lam = np.asarray(eigenvalues.detach().cpu() if hasattr(eigenvalues, "detach") else eigenvalues, dtype=np.float64)
    lam = lam[:max_index]
    if lam.size < 2:
        raise ValueError("a cliff needs at least two eigenvalues")
    lam = np.maximum(lam, np.finfo(np.float64).tiny)
    # A drop to (clamped) zero is an infinite ratio, which argmax ranks first as it should.
    with np.errstate(over="ignore"):
        return int(np.argmax(lam[:-1] / lam[1:])) + 1


def cliff_scores(
    values, *, window: int = 10, min_spread: float = 0.1, floor: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """Ratio λ_p/λ_(p+1) and prominence score of every drop p = 1 … k−1 of ``values`` (k,) descending: two
    (k−1,) arrays, entry p − 1 for the drop after p (module docstring)."""
    lam = _as_values(values)
    if window < 2:
        raise ValueError(f"window must be at least 2 drops on each side, got {window}")
    top = np.abs(lam).max()
    if top == 0:
        raise ValueError("every eigenvalue is zero: a spectrum without scale has no cliffs")
    # Sorting noise of an eigensolver may reorder near-ties; anything larger is a caller's mistake
    # (e.g. torch.linalg.eigh's ascending order).
    rise = np.diff(lam).max()
    if rise > 1e-8 * top:
        raise ValueError(
            f"eigenvalues must be in descending order; λ rises by {rise:.3g} at index "
            f"{int(np.argmax(np.diff(lam))) + 1} (flip an ascending eigh output)"
        )
    log_lam = np.log(np.maximum(lam, floor * top))
    drops = np.maximum(log_lam[:-1] - log_lam[1:], 0.0)
    p = np.arange(1, lam.size, dtype=np.float64)
    slope = drops / np.log1p(1.0 / p)
    n = slope.size
    scores = np.zeros(n)
    for j in range(n):
        neighbours = np.concatenate([slope[max(0, j - window) : j], slope[j + 1 : j + 1 + window]])
        if neighbours.size < 2:
            continue
        centre = np.median(neighbours)
        spread = max(_MAD_TO_SD * np.median(np.abs(neighbours - centre)), min_spread)
        scores[j] = (slope[j] - centre) / spread
    return np.exp(drops), scores


def find_cliffs(
    values,
    *,
    min_score: float = 8.0,
    min_ratio: float = 1.25,
    window: int = 10,
    min_spread: float = 0.1,
    floor: float = 1e-12,
) -> list[Cliff]:
    """Every cliff of ``values`` (k,) descending, sorted by position (module docstring for the rule).

    A drop qualifies when its score ≥ ``min_score`` and its ratio ≥ ``min_ratio``; of a run of adjacent
    qualifying drops only the highest-scoring one is kept. Raises ValueError for NaN/inf, fewer than two
    values, a non-1-D array, ascending order or an all-zero spectrum."""
    ratios, scores = cliff_scores(values, window=window, min_spread=min_spread, floor=floor)
    ok = (scores >= min_score) & (ratios >= min_ratio)
    cliffs: list[Cliff] = []
    previous = -2
    for j in np.flatnonzero(ok):
        candidate = Cliff(int(j) + 1, float(ratios[j]), float(scores[j]))
        if j == previous + 1:
            if candidate.score > cliffs[-1].score:
                cliffs[-1] = candidate
        else:
            cliffs.append(candidate)
        previous = j
    return cliffs


def detect_cliff(values, **kwargs) -> Cliff | None:
    """The most prominent (highest-scoring) cliff of ``find_cliffs(values, **kwargs)``, or None if there is none."""
    cliffs = find_cliffs(values, **kwargs)
    return max(cliffs, key=lambda c: c.score) if cliffs else None
