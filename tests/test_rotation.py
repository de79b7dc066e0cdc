"""Tests for entk.analyses.rotation against constructions written independently of the module."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from entk.analyses.rotation import (
    cliff_slices,
    family_correlation,
    fourier_families,
    laplacians,
    smooth_rotation,
    subspace_overlap,
)

# Direction (Δa, Δb) that each Laplacian penalises, and the grid function its null space holds.
DIRECTIONS = {"a": (1, 0), "b": (0, 1), "sum": (1, 1), "diff": (1, -1)}
NULL_COORD = {"a": lambda a, b: b, "b": lambda a, b: a, "sum": lambda a, b: a - b, "diff": lambda a, b: a + b}
FAMILY_COORD = {"a": lambda a, b: a, "b": lambda a, b: b, "sum": lambda a, b: a + b, "diff": lambda a, b: a - b}


def _torus_laplacian(p: int, da: int, db: int) -> np.ndarray:
    """Laplacian (p², p²) of the cycles along (da, db), built edge by edge."""
    lap = np.zeros((p * p, p * p))
    for a in range(p):
        for b in range(p):
            i = a * p + b
            lap[i, i] = 2.0
            for s in (1, -1):
                lap[i, ((a + s * da) % p) * p + (b + s * db) % p] -= 1.0
    return lap


def _closed_form_family(p: int, name: str) -> np.ndarray:
    """Fourier family (p², 2K) entry by entry; each column has squared norm p²/2 before scaling."""
    coord = FAMILY_COORD[name]
    K = (p - 1) // 2
    fam = np.empty((p * p, 2 * K))
    for a in range(p):
        for b in range(p):
            for k in range(1, K + 1):
                angle = 2.0 * np.pi * k * (coord(a, b) % p) / p
                fam[a * p + b, 2 * (k - 1)] = np.cos(angle) * np.sqrt(2.0) / p
                fam[a * p + b, 2 * (k - 1) + 1] = np.sin(angle) * np.sqrt(2.0) / p
    return fam


def _phase_free(u: np.ndarray, fam: np.ndarray) -> np.ndarray:
    """sqrt(⟨cos_k,u⟩² + ⟨sin_k,u⟩²) for unit columns u (d, m): (K, m)."""
    proj = fam.T @ (u / np.linalg.norm(u, axis=0))
    return np.sqrt(proj[0::2] ** 2 + proj[1::2] ** 2)


def _best_atoms(u: np.ndarray, fams: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of u: best correlation, index of the best family in fams, best frequency k."""
    corr = np.stack([_phase_free(u, f) for f in fams.values()])  # (n_fam, K, m)
    flat = corr.reshape(-1, u.shape[1])
    best = flat.argmax(axis=0)
    fam_idx, k_idx = np.divmod(best, corr.shape[1])
    return flat.max(axis=0), fam_idx, k_idx + 1


def _is_clean(u: np.ndarray, fams: dict[str, np.ndarray]) -> bool:
    """Every column a single-frequency atom, every (family, k) hit by exactly its cos/sin pair."""
    best, fam_idx, k = _best_atoms(u, fams)
    K = next(iter(fams.values())).shape[1] // 2
    counts = np.zeros((len(fams), K), dtype=int)
    np.add.at(counts, (fam_idx, k - 1), 1)
    return bool(np.all(best >= 0.95) and np.all(counts == 2))


def _projector(x: np.ndarray) -> np.ndarray:
    """Orthogonal projector (d, d) onto span of the columns of x, via pseudo-inverse."""
    return x @ np.linalg.pinv(x)


# ---------------------------------------------------------------- Laplacians


@pytest.mark.parametrize("p", [5, 13])
def test_laplacians_match_edge_by_edge_construction(p):
    laps = laplacians(p)
    assert set(laps) == set(DIRECTIONS)
    for name, (da, db) in DIRECTIONS.items():
        assert laps[name].shape == (p * p, p * p) and laps[name].dtype == np.float64
        np.testing.assert_array_equal(laps[name], _torus_laplacian(p, da, db))


@pytest.mark.parametrize("p", [5, 13])
def test_laplacians_symmetric_psd_zero_row_sums(p):
    for lap in laplacians(p).values():
        np.testing.assert_array_equal(lap, lap.T)
        np.testing.assert_allclose(lap.sum(axis=1), 0.0, atol=1e-12)
        assert np.linalg.eigvalsh(lap).min() > -1e-10


@pytest.mark.parametrize("p", [5, 13])
def test_laplacian_null_spaces(p):
    a, b = np.divmod(np.arange(p * p), p)
    for name, lap in laplacians(p).items():
        coord = NULL_COORD[name](a, b) % p
        # The indicators of each level set of the coordinate span the functions of it.
        indicators = (coord[:, None] == np.arange(p)[None, :]).astype(float)
        np.testing.assert_allclose(lap @ indicators, 0.0, atol=1e-12)
        assert np.linalg.matrix_rank(lap) == p * p - p
        # The family the Laplacian does see is not in its null space.
        other = {"a": a, "b": b, "sum": (a + b) % p, "diff": (a - b) % p}[name]
        assert np.linalg.norm(lap @ np.cos(2 * np.pi * other / p)) > 1e-3


def test_laplacians_reject_small_p():
    with pytest.raises(ValueError, match=r"^p must be at least 3, got 2$"):
        laplacians(2)


# ---------------------------------------------------------------- Fourier families


@pytest.mark.parametrize("p", [7, 13, 29])
def test_fourier_families_orthonormal(p):
    fams = fourier_families(p)
    assert set(fams) == set(FAMILY_COORD)
    for fam in fams.values():
        assert fam.shape == (p * p, 2 * ((p - 1) // 2))
        np.testing.assert_allclose(fam.T @ fam, np.eye(fam.shape[1]), atol=1e-12)


@pytest.mark.parametrize("p", [7, 13])
def test_fourier_families_match_closed_form(p):
    fams = fourier_families(p)
    for name in FAMILY_COORD:
        np.testing.assert_allclose(fams[name], _closed_form_family(p, name), atol=1e-12)


def test_family_correlation_is_phase_insensitive():
    p = 11
    fam = _closed_form_family(p, "sum")
    k, phase = 3, 0.7
    # A scaled single-frequency vector at an arbitrary phase, and a random vector.
    atom = 5.0 * (np.cos(phase) * fam[:, 2 * (k - 1)] + np.sin(phase) * fam[:, 2 * (k - 1) + 1])
    rand = np.random.default_rng(0).standard_normal(p * p)
    corr = family_correlation(np.column_stack([atom, rand]), fam)
    assert corr.shape == (5, 2)
    expected_atom = np.zeros(5)
    expected_atom[k - 1] = 1.0
    np.testing.assert_allclose(corr[:, 0], expected_atom, atol=1e-12)
    u = rand / np.linalg.norm(rand)
    brute = [np.hypot(fam[:, 2 * j] @ u, fam[:, 2 * j + 1] @ u) for j in range(5)]
    np.testing.assert_allclose(corr[:, 1], brute, atol=1e-12)


def test_family_correlation_rejects_bad_shapes():
    fam = fourier_families(5)["a"]
    shapes = r"^need vectors \(d, m\) and family \(d, 2K\) with equal d, got "
    with pytest.raises(ValueError, match=shapes + r"\(24, 2\), \(25, 4\)$"):
        family_correlation(np.ones((24, 2)), fam)
    with pytest.raises(ValueError, match=shapes + r"\(25,\), \(25, 4\)$"):
        family_correlation(np.ones(25), fam)
    with pytest.raises(ValueError, match=shapes + r"\(25, 2\), \(25,\)$"):
        family_correlation(np.ones((25, 2)), fam[:, 0])
    with pytest.raises(ValueError, match=r"^family must hold \(cos, sin\) column pairs, got 3 columns$"):
        family_correlation(np.ones((25, 2)), fam[:, :3])
    with pytest.raises(ValueError, match="^vectors has a zero column, which has no direction to correlate$"):
        family_correlation(np.zeros((25, 1)), fam)


def test_families_of_even_p_leave_out_the_cos_only_frequency():
    fam = fourier_families(6)
    assert all(f.shape == (36, 4) for f in fam.values())
    np.testing.assert_allclose(fam["a"].T @ fam["a"], np.eye(4), atol=1e-12)


# ---------------------------------------------------------------- smooth rotation


@pytest.mark.parametrize("p", [13, 29])
@pytest.mark.parametrize(
    ("first", "second", "l1", "l2"),
    [("b", "a", "a", "b"), ("diff", "sum", "sum", "diff")],
)
def test_smooth_rotation_recovers_planted_families(p, first, second, l1, l2):
    fams = {first: _closed_form_family(p, first), second: _closed_form_family(p, second)}
    laps = {name: _torus_laplacian(p, *DIRECTIONS[name]) for name in (l1, l2)}
    planted = np.hstack(list(fams.values()))
    k = planted.shape[1]
    assert k == 2 * (p - 1)
    rng = np.random.default_rng(p)
    mixing, _ = np.linalg.qr(rng.standard_normal((k, k)))
    mixed = planted @ mixing + 1e-3 * rng.standard_normal(planted.shape)
    assert not _is_clean(mixed, fams)

    rotated = smooth_rotation(mixed, laps[l1], laps[l2])
    assert rotated.shape == mixed.shape
    np.testing.assert_allclose(rotated.T @ rotated, np.eye(k), atol=1e-10)
    # Orthonormal with k columns and leaving no residual of the input: the same k-dim span.
    residual = mixed - rotated @ (rotated.T @ mixed)
    assert np.linalg.norm(residual) < 1e-10 * np.linalg.norm(mixed)
    assert _is_clean(rotated, fams)
    # The docstring's claim: the first half is the family L1 cannot see.
    _, fam_idx, _ = _best_atoms(rotated, fams)
    np.testing.assert_array_equal(fam_idx, np.repeat([0, 1], k // 2))


def test_smooth_rotation_rejects_bad_shapes():
    lap = laplacians(5)["a"]
    good = np.random.default_rng(1).standard_normal((25, 4))
    with pytest.raises(ValueError, match=r"^basis must be 2-D \(d, k\), got shape \(25,\)$"):
        smooth_rotation(good[:, 0], lap, lap)
    with pytest.raises(ValueError, match="^basis needs at least 2 columns to split into halves, got 1$"):
        smooth_rotation(good[:, :1], lap, lap)
    with pytest.raises(ValueError, match=r"^L1 must have shape \(25, 25\) to match the basis, got \(24, 24\)$"):
        smooth_rotation(good, lap[:24, :24], lap)
    with pytest.raises(ValueError, match=r"^L2 must have shape \(25, 25\) to match the basis, got \(25, 24\)$"):
        smooth_rotation(good, lap, lap[:, :24])
    with pytest.raises(ValueError, match="^L1 must be symmetric$"):
        smooth_rotation(good, np.triu(lap), lap)
    with pytest.raises(ValueError, match="^L2 must be symmetric$"):
        smooth_rotation(good, lap, np.triu(lap))
    with pytest.raises(ValueError, match="^basis columns are linearly dependent; need full column rank$"):
        smooth_rotation(np.column_stack([good[:, :3], good[:, 0]]), lap, lap)
    with pytest.raises(ValueError, match="^basis needs between 1 and 25 columns for a full column rank, got 26$"):
        smooth_rotation(np.ones((25, 26)), lap, lap)


def test_smooth_rotation_of_two_columns_and_of_the_whole_space():
    lap = laplacians(5)
    two = np.random.default_rng(2).standard_normal((25, 2))
    rotated = smooth_rotation(two, lap["a"], lap["b"])
    np.testing.assert_allclose(rotated.T @ rotated, np.eye(2), atol=1e-12)
    # All 25 directions: a rotation of the whole space; its last half keeps stage 1's order, the roughest along a last.
    whole = smooth_rotation(np.eye(25), lap["a"], lap["b"])
    np.testing.assert_allclose(whole.T @ whole, np.eye(25), atol=1e-12)
    assert whole[:, -1] @ lap["a"] @ whole[:, -1] == pytest.approx(np.linalg.eigvalsh(lap["a"]).max())


# ---------------------------------------------------------------- subspace overlap


def test_subspace_overlap_full_and_zero():
    p = 13
    fam = _closed_form_family(p, "sum")
    f = fam.shape[1]
    rng = np.random.default_rng(2)
    containing = np.hstack([fam @ rng.standard_normal((f, f)), rng.standard_normal((p * p, 7))])
    assert subspace_overlap(containing, fam) == pytest.approx(f, abs=1e-10)
    complement = scipy.linalg.null_space(fam.T)
    assert subspace_overlap(complement, fam) == pytest.approx(0.0, abs=1e-10)


def test_subspace_overlap_matches_projector_trace():
    rng = np.random.default_rng(3)
    d = 60
    basis = rng.standard_normal((d, 9))
    # A large per-column offset makes the mean-centring matter.
    family = rng.standard_normal((d, 5)) + 4.0
    centred = family - family.mean(axis=0)
    brute = np.trace(_projector(basis) @ _projector(centred))
    assert subspace_overlap(basis, family) == pytest.approx(brute, abs=1e-10)
    assert subspace_overlap(basis, family) != pytest.approx(np.trace(_projector(basis) @ _projector(family)))


def test_subspace_overlap_rejects_bad_shapes():
    rng = np.random.default_rng(4)
    shapes = r"^need basis \(d, k\) and family \(d, f\) with equal d, got "
    with pytest.raises(ValueError, match=shapes + r"\(10, 3\), \(11, 2\)$"):
        subspace_overlap(rng.standard_normal((10, 3)), rng.standard_normal((11, 2)))
    with pytest.raises(ValueError, match=shapes + r"\(10,\), \(10, 2\)$"):
        subspace_overlap(rng.standard_normal(10), rng.standard_normal((10, 2)))
    with pytest.raises(ValueError, match=shapes + r"\(10, 3\), \(10,\)$"):
        subspace_overlap(rng.standard_normal((10, 3)), rng.standard_normal(10))
    with pytest.raises(ValueError, match="^mean-centred family columns are linearly dependent; need full column rank$"):
        subspace_overlap(rng.standard_normal((10, 3)), np.ones((10, 2)))
    with pytest.raises(ValueError, match="^basis needs between 1 and 10 columns for a full column rank, got 0$"):
        subspace_overlap(np.ones((10, 0)), rng.standard_normal((10, 2)))


def test_subspace_overlap_at_any_scale_and_rank():
    rng = np.random.default_rng(5)
    basis, family = rng.standard_normal((10, 3)), rng.standard_normal((10, 2))
    expected = np.trace(_projector(basis) @ _projector(family - family.mean(axis=0)))
    # Rank is judged relative to the largest singular value: a tiny basis is as independent as a unit one.
    assert subspace_overlap(1e-10 * basis, family) == pytest.approx(expected, abs=1e-10)
    # One column and the whole space are allowed: the latter holds all of the family's centred span.
    one = basis[:, :1]
    assert subspace_overlap(one, family) == pytest.approx(
        np.trace(_projector(one) @ _projector(family - family.mean(0)))
    )
    assert subspace_overlap(np.eye(10), family) == pytest.approx(2)
    # A column 1e-20 of the largest is no direction of its own, even if the next-largest is far smaller too.
    scaled = basis * np.array([1e6, 1.0, 1e-14])
    with pytest.raises(ValueError, match="^basis columns are linearly dependent"):
        subspace_overlap(scaled, family)


# ---------------------------------------------------------------- cliffs


def test_cliff_slices_paper_values():
    assert cliff_slices(29) == (slice(1, 57), slice(57, 113))


@pytest.mark.parametrize("p", [3, 5, 13, 29])
def test_cliff_slices_contiguous_and_inside_spectrum(p):
    c1, c2 = cliff_slices(p)
    idx = np.arange(p * p)
    assert len(idx[c1]) == len(idx[c2]) == 2 * (p - 1)
    assert c1.start == 1 and c1.stop == c2.start and c2.stop <= p * p


def test_cliff_slices_and_families_reject_small_p():
    with pytest.raises(ValueError):
        cliff_slices(2)
    with pytest.raises(ValueError):
        fourier_families(2)
