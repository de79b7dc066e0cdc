"""Analyses of the paper's 1-layer Transformer (docs/spec.md §3) on plain arrays — numpy, no torch.

- key frequencies, two independent routes: ``key_frequencies_embedding`` (Fourier power of W_E over
  the number tokens, as the author read them) and ``key_frequencies_ntk`` (grid Fourier power of the
  top eNTK eigenvectors). Both rank the power of the frequencies 1..K = (p−1)/2 and keep those above
  the largest ratio gap among the top K/2 + 1: a trained network uses a few frequencies, whose power
  stands orders above the rest;
- ``key_families``: a, b, a+b, a−b, axis-sum, axis-diff at the key frequencies (p², 2·n_keys);
- ``layer_table`` (Table 2 analogue), ``overlap_curve`` / ``grokking_diagnostic`` (W_U over training);
- claims rows (``transformer_claims`` and its parts) with the bands of ``BANDS``.

Grid convention (as in entk.analyses.rotation): sample i = a·p + b is the sequence (a, b, '='), '=' = token p.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from entk.analyses.claims import claim_row
from entk.analyses.modadd import grokking_epoch
from entk.analyses.rotation import subspace_overlap


def _gap_count(power: np.ndarray, max_keys: int) -> list[int]:
    """Frequencies 1..K (power (K,)) above the largest ratio gap among the top ``max_keys`` + 1, sorted."""
    order = np.argsort(power)[::-1]
    ranked = np.maximum(power[order], np.finfo(np.float64).tiny)
    m = min(max_keys, len(ranked) - 1)
    n = int(np.argmax(ranked[:m] / ranked[1 : m + 1])) + 1
    return sorted(int(k) + 1 for k in order[:n])


def embedding_power(w_e: np.ndarray, p: int) -> np.ndarray:
    """Fourier power (K,) of the number-token embeddings W_E[:p] (≥ p, d) at frequencies k = 1..K = (p−1)//2.

    Mean over d_model of |FFT over tokens|², k and p − k folded together (equal for a real signal).
    """
    power = (np.abs(np.fft.fft(np.asarray(w_e, dtype=np.float64)[:p], axis=0)) ** 2).mean(axis=1)
    k = np.arange(1, (p - 1) // 2 + 1)
    return power[k] + power[p - k]


def key_frequencies_embedding(w_e: np.ndarray, p: int, max_keys: int | None = None) -> list[int]:
    """Key frequencies from the Fourier power of W_E (vocab, d): those above the largest ratio gap.

    The power is ranked descending, P_(1) ≥ P_(2) ≥ …; the count n maximises P_(n)/P_(n+1) over
    n ≤ max_keys (default K/2, as a trained network uses a few frequencies, never most of them).
    """
    power = embedding_power(w_e, p)
    return _gap_count(power, max_keys or len(power) // 2)


def grid_fourier_power(vectors: np.ndarray, p: int) -> np.ndarray:
    """Power (K,) of vectors (p², m) at each frequency k = 1..K, summed over the vectors and the a, b,
    a+b and a−b Fourier families of the grid (squared phase-insensitive correlations)."""
    from entk.analyses.rotation import family_correlation, fourier_families

    fam = fourier_families(p)
    return sum((family_correlation(vectors, fam[v]) ** 2).sum(axis=1) for v in ("a", "b", "sum", "diff"))


def key_frequencies_ntk(vectors: np.ndarray, p: int, max_keys: int | None = None) -> list[int]:
    """Key frequencies from top eNTK eigenvectors (p², m) (e.g. the W_U all_mean kernel's top 9):
    their grid Fourier power (``grid_fourier_power``), cut at the largest ratio gap as for W_E."""
    power = grid_fourier_power(vectors, p)
    return _gap_count(power, max_keys or len(power) // 2)


# --- Feature families at the key frequencies (paper §3) ---

FAMILIES = ("a", "b", "sum", "diff", "axis_sum", "axis_diff")


def key_families(p: int, keys: Sequence[int]) -> dict[str, np.ndarray]:
    """Families at the key frequencies on the (a, b) grid, each (p², 2·len(keys)), mean-centred and orthonormal.

    Per key k (columns 2j, 2j+1): a, b, sum, diff = (cos, sin)(2πk·v/p) for v = a, b, a+b, a−b;
    axis_sum = (cos ka + cos kb, sin ka + sin kb) and axis_diff = (cos ka − cos kb, sin ka − sin kb)
    (angles 2πk·/p). Orthonormalised in column order (QR, signs kept), so column pairs stay per key.
    """
    if not keys or any(not 1 <= k <= (p - 1) // 2 for k in keys) or len(set(keys)) != len(keys):
        raise ValueError(f"keys must be distinct frequencies in 1..{(p - 1) // 2}, got {list(keys)}")
    a, b = np.divmod(np.arange(p * p), p)
    out = {}
    for name in FAMILIES:
        cols = []
        for k in keys:
            ta, tb = 2 * np.pi * k * a / p, 2 * np.pi * k * b / p
            pair = {
                "a": (np.cos(ta), np.sin(ta)),
                "b": (np.cos(tb), np.sin(tb)),
                "sum": (np.cos(ta + tb), np.sin(ta + tb)),
                "diff": (np.cos(ta - tb), np.sin(ta - tb)),
                "axis_sum": (np.cos(ta) + np.cos(tb), np.sin(ta) + np.sin(tb)),
                "axis_diff": (np.cos(ta) - np.cos(tb), np.sin(ta) - np.sin(tb)),
            }[name]
            cols += pair
        x = np.stack(cols, axis=1)
        q, r = np.linalg.qr(x - x.mean(axis=0))
        out[name] = q * np.sign(np.diag(r))
    return out


# --- Table 2 analogue and the grokking diagnostic (paper §3) ---


def default_groups(n_keys: int, k: int) -> list[tuple[int, int]]:
    """Eigenvector groups (start, stop), 0-based: the top 1 + 2·n_keys (the paper's "top-5" for two keys:
    one leading mode and a (cos, sin) pair per key), then blocks of 2·n_keys while they fit in k."""
    size = 2 * n_keys
    groups = [(0, 1 + size)]
    while groups[-1][1] + size <= k:
        groups.append((groups[-1][1], groups[-1][1] + size))
    return groups


def group_label(group: tuple[int, int]) -> str:
    """'1–5' for (0, 5): 1-based eigenvector numbers."""
    return f"{group[0] + 1}–{group[1]}"


def layer_table(
    eigen: dict[str, tuple[np.ndarray, np.ndarray]],
    families: dict[str, np.ndarray],
    groups: Sequence[tuple[int, int]],
) -> pd.DataFrame:
    """Subspace overlap of each tensor's eigenvector groups with each family (Table 2 analogue).

    ``eigen`` maps tensor → (values (k,), vectors (p², k)); groups are 0-based (start, stop).
    Columns: tensor, group (e.g. '1–5'), family, overlap (‖QᵀF‖²_F), of (= min(group size, family
    width): the overlap's maximum).
    """
    rows = []
    for tensor, (_, vectors) in eigen.items():
        for g in groups:
            if g[1] > vectors.shape[1]:
                raise ValueError(f"group {group_label(g)} needs {g[1]} eigenvectors; {tensor} has {vectors.shape[1]}")
            for name, fam in families.items():
                rows.append(
                    {
                        "tensor": tensor,
                        "group": group_label(g),
                        "family": name,
                        "overlap": subspace_overlap(vectors[:, g[0] : g[1]], fam),
                        "of": min(g[1] - g[0], fam.shape[1]),
                    }
                )
    return pd.DataFrame(rows, columns=["tensor", "group", "family", "overlap", "of"])


def overlap_curve(epochs: np.ndarray, vectors: np.ndarray, family: np.ndarray, n_top: int = 5) -> pd.DataFrame:
    """Overlap of the top ``n_top`` eigenvectors with a family at each checkpoint, vectors (T, p², k).

    Columns: epoch, overlap (‖QᵀF‖²_F), of (its maximum, min(n_top, family width)), d_overlap (central
    differences per epoch; one-sided at the ends).
    """
    epochs = np.asarray(epochs)
    if vectors.ndim != 3 or vectors.shape[0] != len(epochs) or vectors.shape[2] < n_top:
        raise ValueError(f"need vectors (T={len(epochs)}, p², ≥ {n_top}), got {vectors.shape}")
    overlap = np.array([subspace_overlap(v[:, :n_top], family) for v in vectors])
    slope = np.gradient(overlap, epochs) if len(epochs) > 1 else np.zeros(1)
    of = min(n_top, family.shape[1])
    return pd.DataFrame({"epoch": epochs.astype(int), "overlap": overlap, "of": of, "d_overlap": slope})


def derivative_peak(curve: pd.DataFrame) -> int:
    """Epoch at which the overlap's derivative peaks."""
    return int(curve["epoch"].iloc[int(np.argmax(curve["d_overlap"].to_numpy()))])


def grokking_diagnostic(
    epochs: np.ndarray,
    vectors: np.ndarray,
    history: pd.DataFrame,
    family: np.ndarray,
    *,
    n_top: int = 5,
    threshold: float = 0.5,
) -> tuple[pd.DataFrame, int, int | None]:
    """The W_U eNTK grokking diagnostic: (overlap curve of the top ``n_top`` eigenvectors (T, p², k) with
    ``family``, the epoch of its derivative peak, the grokking epoch (first test accuracy ≥ threshold))."""
    curve = overlap_curve(epochs, vectors, family, n_top)
    return curve, derivative_peak(curve), grokking_epoch(history, threshold)


# --- Claims rows (paper §3) ---

# Bands used by ``transformer_claims`` (the config may override each key).
BANDS = {
    # Test accuracy the paper reached (95 % at 1600, 100 % at 2000) and the epoch it must be reached by.
    "transformer_test_acc_min": 0.95,
    "transformer_test_acc_by_epoch": 2000,
    # Share of the maximum overlap: the paper's 3.96 and 3.94 of 4 are 0.99 and 0.985; 0.95 = 3.8 of 4.
    "transformer_sum_overlap_min_share": 0.95,
    "transformer_axis_sum_overlap_min_share": 0.95,
    # The derivative peak may come before the grokking epoch by up to this many epochs and after it by
    # at most ``after``: the overlap grows while the circuit forms, before test accuracy crosses the
    # threshold (in §2 the peak, epoch 80, precedes grokking, epoch 90).
    "transformer_peak_before_grok_max": 600,
    "transformer_peak_after_grok_max": 200,
}


def key_frequency_claims(keys_embedding: Sequence[int], keys_ntk: Sequence[int]) -> list[dict]:
    """The two routes to the key frequencies agree."""
    same = sorted(keys_embedding) == sorted(keys_ntk)
    measured = f"W_E {list(keys_embedding)}, W_U eNTK {list(keys_ntk)}"
    claim = "key frequencies: W_E Fourier power = top W_U eNTK modes"
    return [claim_row(claim, "the same set (paper: 1, 12)", measured, same)]


def accuracy_claims(history: pd.DataFrame, bands: dict) -> list[dict]:
    """Test accuracy ≥ bands' minimum by the bands' epoch."""
    need, by = bands["transformer_test_acc_min"], bands["transformer_test_acc_by_epoch"]
    early = history.loc[history["epoch"] <= by, "test_acc"]
    best = float(early.max()) if len(early) else float("nan")
    expected = f"≥ {need:.0%} (paper 95 % at 1600, 100 % at 2000)"
    return [claim_row(f"best test accuracy by epoch {by}", expected, best, best >= need)]


def unembed_claims(vectors: np.ndarray, families: dict[str, np.ndarray], n_keys: int, bands: dict) -> list[dict]:
    """W_U eNTK modes vs the key-frequency families, final eigenvectors (p², k) (paper Table 2).

    Groups ``default_groups``: the top 1 + 2·n_keys modes vs the sum family and the next 2·n_keys vs
    the axis-sum family, each out of 2·n_keys (paper, two keys: top 5 → 3.96 of 4, 6–9 → 3.94 of 4).
    Measured as a share of 2·n_keys, so that runs with other numbers of keys share a row.
    """
    top, nxt = default_groups(n_keys, 1 + 4 * n_keys)
    rows = []
    for group, fam, key, paper, which in (
        (top, "sum", "transformer_sum_overlap_min_share", "3.96 of 4", "top 1 + 2·n_keys"),
        (nxt, "axis_sum", "transformer_axis_sum_overlap_min_share", "3.94 of 4", "next 2·n_keys"),
    ):
        value = subspace_overlap(vectors[:, group[0] : group[1]], families[fam])
        share = value / (2 * n_keys)
        rows.append(
            claim_row(
                f"W_U eNTK {which} modes vs the {fam} family of the key frequencies (share)",
                f"≥ {bands[key]:g} (paper {paper})",
                f"{share:.4g} ({value:.4g} of {2 * n_keys}, modes {group_label(group)})",
                share >= bands[key],
            )
        )
    return rows


def _offset(peak: int | None, grok: int | None, what: str) -> str:
    """A peak against the grokking epoch as measured: the offset first, then both epochs."""
    if peak is None:
        return "no transition"
    if grok is None:
        return f"no grokking ({what} {peak})"
    return f"{peak - grok:+d} ({what} {peak}, grok {grok})"


def grokking_claims(peak: int, grok: int | None, threshold: float, n_top: int, bands: dict) -> list[dict]:
    """The overlap-derivative peak of the top ``n_top`` W_U modes lies in [grok − before, grok + after]."""
    before, after = bands["transformer_peak_before_grok_max"], bands["transformer_peak_after_grok_max"]
    ok = grok is not None and grok - before <= peak <= grok + after
    return [
        claim_row(
            f"W_U top 1 + 2·n_keys modes: sum-overlap derivative peak − grokking epoch (test acc ≥ {threshold:.0%})",
            f"in [−{before}, +{after}]",
            _offset(peak, grok, f"top-{n_top} peak"),
            ok,
        )
    ]


def transformer_claims(
    p: int,
    w_e: np.ndarray,
    final_vectors: np.ndarray,
    epochs: np.ndarray,
    unembed_vectors: np.ndarray,
    history: pd.DataFrame,
    bands: dict,
    threshold: float = 0.5,
    n_ntk_vectors: int = 16,
) -> list[dict]:
    """All paper-§3 claims from plain arrays: W_E (vocab, d) at the last checkpoint, the final W_U eNTK
    eigenvectors (p², k ≥ n_ntk_vectors), the W_U eigenvectors at every logged epoch (T, p², ≥ 5)."""
    keys = key_frequencies_embedding(w_e, p)
    fam = key_families(p, keys)
    rows = key_frequency_claims(keys, key_frequencies_ntk(final_vectors[:, :n_ntk_vectors], p))
    rows += accuracy_claims(history, bands)
    rows += unembed_claims(final_vectors, fam, len(keys), bands)
    n_top = default_groups(len(keys), 1)[0][1]
    _, peak, grok = grokking_diagnostic(epochs, unembed_vectors, history, fam["sum"], n_top=n_top, threshold=threshold)
    return rows + grokking_claims(peak, grok, threshold, n_top, bands)


def detector_claims(peak: int | None, grok: int | None, threshold: float, bands: dict) -> list[dict]:
    """The label-free phase detector (``entk.analyses.analysis``) on the W_U eNTK, with no key frequencies,
    against the grokking epoch, in the band of the overlap-derivative peak."""
    before, after = bands["transformer_peak_before_grok_max"], bands["transformer_peak_after_grok_max"]
    ok = peak is not None and grok is not None and grok - before <= peak <= grok + after
    return [
        claim_row(
            f"label-free phase detector peak (W_U eNTK) − grokking epoch (test acc ≥ {threshold:.0%})",
            f"in [−{before}, +{after}]",
            _offset(peak, grok, "peak"),
            ok,
        )
    ]
