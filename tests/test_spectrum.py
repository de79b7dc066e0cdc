"""Cliff detection on planted spectra: entk.spectrum (numpy only)."""

import subprocess
import sys

import numpy as np
import pytest

from entk.spectrum import Cliff, cliff, cliff_scores, detect_cliff, find_cliffs


def noisy(values: np.ndarray, sd: float, seed: int) -> np.ndarray:
    """``values`` times log-normal noise of relative size ``sd``, re-sorted descending (as an eigensolver returns)."""
    rng = np.random.default_rng(seed)
    return np.sort(values * np.exp(sd * rng.standard_normal(values.size)))[::-1]


def plateaus(levels: list[float], sizes: list[int], slope: float, sd: float, seed: int) -> np.ndarray:
    """Blocks of ``sizes`` eigenvalues starting at ``levels``, each decaying like exp(−slope·i), with noise."""
    blocks = [level * np.exp(-slope * np.arange(size)) for level, size in zip(levels, sizes, strict=False)]
    return noisy(np.concatenate(blocks), sd, seed)


def positions(cliffs: list[Cliff]) -> list[int]:
    return [c.position for c in cliffs]


def test_a_smaller_cliff_after_a_larger_ratio_is_found():
    # Shaped like the un-rescaled TMS (m = 10, S = 0.9) spectrum: 31 large eigenvalues, a ratio ≈ 2.4,
    # 19 noisily decaying ones, the one-mode-per-feature cliff of ratio ≈ 1.8 after 50, then a slow tail.
    lam = np.concatenate(
        [
            noisy(500 * np.exp(-0.008 * np.arange(31)), 0.02, 1),
            noisy(165 * np.exp(-0.035 * np.arange(19)), 0.04, 2),
            noisy(48 * np.exp(-0.005 * np.arange(30)), 0.01, 3),
        ]
    )
    ratios = lam[:-1] / lam[1:]
    assert 2.2 < ratios[30] and 1.6 < ratios[49] < ratios[30]
    assert cliff(lam) == 31  # the largest-ratio rule sees only the first
    found = find_cliffs(lam)
    assert positions(found) == [31, 50]
    assert found[1].ratio == pytest.approx(ratios[49])


def test_the_most_prominent_cliff_need_not_have_the_largest_ratio():
    # A steep, noisy head (ratios up to 2.5 between its first eigenvalues) and a ratio-1.8 cliff after 50
    # in a flat, quiet stretch: the cliff stands out from its neighbours, the head's ratios do not.
    head = noisy(np.arange(1, 11, dtype=float) ** -1.5, 0.05, 4) * 1e3
    lam = np.concatenate([head, head[-1] * 0.98 ** np.arange(1, 41), head[-1] * 0.98**40 / 1.8 * 0.99 ** np.arange(30)])
    assert cliff(lam) < 10
    best = detect_cliff(lam)
    assert best is not None and best.position == 50 and best.ratio == pytest.approx(1.8, rel=0.02)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("k", [80, 200])
def test_power_laws_have_no_cliff(alpha, k):
    # A power law's head has large ratios (2^α between the first two) but no drop out of its trend.
    lam = np.arange(1, k + 1, dtype=float) ** -alpha
    assert find_cliffs(lam) == [] and detect_cliff(lam) is None
    for seed in range(5):
        assert find_cliffs(noisy(lam, 0.01, seed)) == [], seed


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2])
def test_exponential_decays_have_no_cliff(rate):
    lam = np.exp(-rate * np.arange(150))
    assert find_cliffs(lam) == []
    assert find_cliffs(noisy(lam, 0.01, 7)) == []


def test_multiple_cliffs_are_found_in_order():
    lam = plateaus([100.0, 30.0, 10.0, 1.0], [10, 20, 27, 60], slope=0.01, sd=0.01, seed=5)
    found = find_cliffs(lam)
    assert positions(found) == [10, 30, 57]
    assert all(c.ratio > 2.5 for c in found)
    assert detect_cliff(lam) == max(found, key=lambda c: c.score)


def test_a_drop_over_two_adjacent_gaps_is_one_cliff():
    # 50 at ≈ 100, then 60 and 45 with a slow tail: two adjacent qualifying drops (ratios 1.59 and
    # 1.33), the steeper kept.
    lam = np.concatenate([100 * 0.999 ** np.arange(50), [60.0], 45 * 0.999 ** np.arange(29)])
    found = find_cliffs(lam)
    assert positions(found) == [50]
    assert found[0].ratio == pytest.approx(100 * 0.999**49 / 60)
    assert find_cliffs(lam, min_ratio=1.6) == []  # the second drop alone is no cliff either


def test_thresholds_decide_what_counts():
    lam = plateaus([100.0, 30.0], [40, 40], slope=0.01, sd=0.01, seed=6)
    (only,) = find_cliffs(lam)
    assert only.position == 40
    assert find_cliffs(lam, min_ratio=only.ratio * 1.01) == []
    assert find_cliffs(lam, min_score=only.score * 1.01) == []


def test_ties_zeros_and_negatives():
    # Exactly tied eigenvalues (MAD = 0) followed by a cliff: found, nothing else.
    tied = np.concatenate([np.full(20, 5.0), np.full(30, 1.0)])
    assert positions(find_cliffs(tied)) == [20]
    # A rank-12 kernel: zeros and round-off negatives after it are a finite, very large cliff.
    rank = np.concatenate([np.linspace(10, 8, 12), [0.0, 0.0, -1e-15, -3e-14]])
    found = find_cliffs(rank)
    assert positions(found) == [12] and np.isfinite(found[0].ratio) and np.isfinite(found[0].score)
    assert cliff(rank) == 12


@pytest.mark.parametrize(
    "values, message",
    [
        ([3.0, np.nan, 1.0], "NaN or infinite"),
        ([np.inf, 2.0, 1.0], "NaN or infinite"),
        ([1.0], "at least two"),
        (np.ones((3, 3)), "1-D"),
        ([1.0, 2.0, 3.0], "descending"),
        ([0.0, 0.0, 0.0], "every eigenvalue is zero"),
    ],
)
def test_bad_spectra_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        find_cliffs(values)
    with pytest.raises(ValueError, match=message):
        detect_cliff(values)


def test_scores_are_per_drop():
    lam = plateaus([10.0, 1.0], [30, 30], slope=0.02, sd=0.0, seed=0)
    ratios, scores = cliff_scores(lam)
    assert ratios.shape == scores.shape == (59,)
    np.testing.assert_allclose(ratios, lam[:-1] / lam[1:])
    assert int(np.argmax(scores)) == 29


def test_largest_ratio_rule_is_unchanged():
    # The rule the modular-addition claims use, written out independently: argmax of λ_i/λ_{i+1} + 1.
    rng = np.random.default_rng(8)
    for _ in range(20):
        lam = np.sort(rng.lognormal(0.0, 2.0, 60))[::-1]
        for max_index in (None, 5, 30):
            head = lam[:max_index]
            assert cliff(lam, max_index) == int(np.argmax(head[:-1] / head[1:])) + 1
    with pytest.raises(ValueError, match="at least two"):
        cliff(np.ones(5), max_index=1)


def test_spectrum_and_claims_import_without_torch():
    code = "import sys; sys.modules['torch'] = None; import entk.spectrum, entk.claims; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
