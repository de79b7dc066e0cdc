"""TMS claims of paper §1 on planted spectra, eigenvectors and weights (entk.analyses.claims, no torch)."""

import numpy as np
import pytest

from entk.analyses.claims import (
    format_scorecard,
    scorecard,
    tms_cliff_claims,
    tms_model_claims,
    tms_recovery_claims,
    tms_represented_claims,
)

N_FEATURES, N_POINTS, K = 50, 40, 80
BANDS = {
    "tms_cliff_tolerance": 0,
    "tms_recovery_overlap": 0.9,
    "tms_recovered_min": 26,
    "tms_represented": {"m10_S0.3": 10, "m10_S0.9": 21, "m40_S0.9": 42},
    "tms_represented_tolerance": 3,
    "cliff_detector": {"min_score": 8.0, "min_ratio": 1.25},
}


def spectrum(cliffs: dict[int, float], seed: int = 0) -> np.ndarray:
    """K descending eigenvalues decaying by 1 % per index with 2 % noise and a drop of ratio r after each position."""
    rng = np.random.default_rng(seed)
    steps = np.full(K - 1, 0.01) + 0.02 * np.abs(rng.standard_normal(K - 1))
    for position, ratio in cliffs.items():
        steps[position - 1] = np.log(ratio)
    return 100 * np.exp(-np.concatenate([[0.0], np.cumsum(steps)]))


def data(seed: int = 1) -> np.ndarray:
    """Sparse features x (N, n): zero with probability 0.9, else uniform on [0, 1]; every feature nonzero somewhere."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(N_POINTS, N_FEATURES)) * (rng.uniform(size=(N_POINTS, N_FEATURES)) > 0.9)
    x[np.arange(N_FEATURES) % N_POINTS, np.arange(N_FEATURES)] += 0.5
    return x


def indicator(x: np.ndarray, a: int) -> np.ndarray:
    """z^a (n·N,) normalised: x_a in block a (class-major), zero elsewhere."""
    z = np.zeros(N_FEATURES * N_POINTS)
    z[a * N_POINTS : (a + 1) * N_POINTS] = x[:, a]
    return z / np.linalg.norm(z)


def vectors(x: np.ndarray, clean: int, seed: int = 2) -> np.ndarray:
    """K unit columns: z^a for the first ``clean`` features, then an even mix of two features' indicators
    (column-normalised overlap 1/√2 each), then random directions."""
    rng = np.random.default_rng(seed)
    cols = [indicator(x, a) for a in range(clean)]
    cols += [(indicator(x, a) + indicator(x, a + 1)) / np.sqrt(2) for a in range(clean, N_FEATURES - 1, 2)]
    cols += [rng.standard_normal(N_FEATURES * N_POINTS) for _ in range(K - len(cols))]
    v = np.stack(cols, axis=1)
    return v / np.linalg.norm(v, axis=0)


def by_claim(rows: list[dict]) -> dict[str, dict]:
    return {row["claim"]: row for row in rows}


def test_cliff_after_n_passes_even_behind_a_larger_ratio():
    rows = by_claim(tms_cliff_claims("m10_S0.9", spectrum({31: 2.4, 50: 1.8}), N_FEATURES, BANDS))
    gap = rows["TMS m10_S0.9: un-rescaled gap λ50/λ51"]
    found = rows["TMS m10_S0.9: detected cliff after n = 50 (un-rescaled)"]
    assert gap["pass"] and float(gap["measured"]) == pytest.approx(1.8, rel=1e-3)
    assert found["pass"] and found["measured"] == "cliffs after [31, 50], most prominent 31"


@pytest.mark.parametrize(
    "cliffs, gap_passes, detected_passes",
    [
        ({}, False, False),  # no cliff at all
        ({44: 3.0}, False, False),  # a cliff, but after 44
        ({51: 3.0}, False, False),  # one mode too many: no cliff after n
        ({50: 1.4}, True, True),  # a small cliff, still above the detector's least ratio
        ({50: 1.2}, False, False),  # below it: no cliff
    ],
)
def test_cliff_claims_fail_where_the_spectrum_disagrees(cliffs, gap_passes, detected_passes):
    rows = tms_cliff_claims("m", spectrum(cliffs), N_FEATURES, BANDS)
    assert [row["pass"] for row in rows] == [gap_passes, detected_passes]


def test_bands_come_from_the_detector_and_the_tolerance():
    values = spectrum({51: 3.0})
    gap, found = tms_cliff_claims("m", values, N_FEATURES, {**BANDS, "tms_cliff_tolerance": 1})
    assert found["pass"] and found["expected"] == "one within 50 ± 1"
    assert not gap["pass"] and gap["expected"] == "≥ 1.25 (the cliff detector's min_ratio)"
    # Without detector settings the detector's own defaults apply, to the gap and to the detection.
    default = {"tms_cliff_tolerance": 0}
    gap, found = tms_cliff_claims("m", spectrum({50: 1.3}), N_FEATURES, default)
    assert gap["pass"] and float(gap["measured"]) == pytest.approx(1.3, rel=1e-3)
    assert found["pass"] and found["expected"] == "one after n = 50"
    gap, found = tms_cliff_claims(
        "m", spectrum({50: 1.3}), N_FEATURES, {**default, "cliff_detector": {"min_ratio": 1.4}}
    )
    assert not gap["pass"] and gap["expected"] == "≥ 1.4 (the cliff detector's min_ratio)" and not found["pass"]


def test_detector_settings_come_from_the_bands():
    values = spectrum({50: 1.8})
    strict = {**BANDS, "cliff_detector": {"min_ratio": 2.0}}
    assert tms_cliff_claims("m", values, N_FEATURES, BANDS)[1]["pass"]
    gap, row = tms_cliff_claims("m", values, N_FEATURES, strict)
    assert not row["pass"] and row["measured"] == "no cliff" and not gap["pass"]
    with pytest.raises(ValueError, match="more than 50 eigenvalues"):
        tms_cliff_claims("m", values[:50], N_FEATURES, BANDS)


def test_recovery_counts_at_the_best_beta():
    x = data()
    (row,) = tms_recovery_claims("m", {1.0: vectors(x, 20), 0.3: vectors(x, 30)}, x, BANDS)
    assert row["pass"] and row["measured"] == "30 at β=0.3 (β=1: 20, β=0.3: 30)"
    (row,) = tms_recovery_claims("m", {1.0: vectors(x, 20), 0.3: vectors(x, 25)}, x, BANDS)
    assert not row["pass"] and row["measured"].startswith("25 at β=0.3")
    with pytest.raises(ValueError, match="at least one β"):
        tms_recovery_claims("m", {}, x, BANDS)


def test_represented_features_against_the_paper_value():
    w = np.full((10, N_FEATURES), np.sqrt(0.5 / 10))
    w[:, :12] = np.sqrt(1.0 / 10)  # 12 columns with (WᵀW)_ii = 1, the rest 0.5
    (row,) = tms_represented_claims("m10_S0.3", w, BANDS)
    assert row["pass"] and row["measured"] == "12"
    w[:, 12:14] = np.sqrt(0.8 / 10)
    assert not tms_represented_claims("m10_S0.3", w, BANDS)[0]["pass"]
    assert tms_represented_claims("m99", w, BANDS) == []


def test_model_claims_make_one_scorecard():
    x = data()
    w = np.full((10, N_FEATURES), np.sqrt(0.5 / 10))
    w[:, :10] = np.sqrt(1.0 / 10)
    rows = tms_model_claims("m10_S0.3", spectrum({50: 20.0}), {1.0: vectors(x, 40)}, x, w, BANDS)
    table = scorecard(rows)
    assert len(table) == 4 and table["pass"].all(), format_scorecard(table)


def test_gap_at_exactly_the_detectors_least_ratio_passes():
    values = np.concatenate([np.full(N_FEATURES, 100.0), np.full(K - N_FEATURES, 80.0)])  # λ50/λ51 = 1.25 exactly
    gap, found = tms_cliff_claims("m", values, N_FEATURES, BANDS)
    assert gap["pass"] and gap["measured"] == "1.25" and found["pass"]


def test_recovery_reads_every_column_at_the_bands_threshold():
    x = data()
    clean = vectors(x, 30)
    late = np.hstack([clean[:, 30:], clean[:, :30]])  # the 30 clean columns after column 50 of 80
    (row,) = tms_recovery_claims("m", {1.0: late}, x, BANDS)
    assert row["measured"] == "30 at β=1 (β=1: 30)" and row["pass"]
    assert row["claim"] == "TMS m: features with overlap ≥ 0.9 with a top-80 eigenvector (best β)"
    assert row["expected"] == "≥ 26 of 50"
    (row,) = tms_recovery_claims("m", {1.0: vectors(x, 26)}, x, BANDS)
    assert row["pass"] and row["measured"].startswith("26 at")  # the band's edge counts
    # 0.92 of one indicator and 0.39 of the next: recovered at threshold 0.9, not at 0.95.
    tilted = vectors(x, 26)
    tilted[:, 0] = 0.92 * indicator(x, 0) + np.sqrt(1 - 0.92**2) * indicator(x, 1)
    assert tms_recovery_claims("m", {1.0: tilted}, x, BANDS)[0]["measured"].startswith("26 at")
    strict = {**BANDS, "tms_recovery_overlap": 0.95}
    (row,) = tms_recovery_claims("m", {1.0: tilted}, x, strict)
    assert row["measured"].startswith("25 at") and not row["pass"] and "overlap ≥ 0.95" in row["claim"]
    with pytest.raises(ValueError, match="^feature recovery needs the eigenvectors of at least one β$"):
        tms_recovery_claims("m", {}, x, BANDS)


def test_represented_rows_name_the_model_and_the_band():
    w = np.full((10, N_FEATURES), np.sqrt(0.5 / 10))
    w[:, :13] = np.sqrt(1.0 / 10)  # 13 = the paper's 10 + the tolerance 3: inside the band
    (row,) = tms_represented_claims("m10_S0.3", w, BANDS)
    assert row == {
        "claim": "TMS m10_S0.3: features with (WᵀW)_ii ≥ 0.75",
        "expected": "10 ± 3",
        "measured": "13",
        "pass": True,
    }
    x = data()
    rows = tms_model_claims("m10_S0.3", spectrum({50: 20.0}), {1.0: vectors(x, 40)}, x, w, BANDS)
    assert [r["claim"].split(":")[0] for r in rows] == ["TMS m10_S0.3"] * 4
