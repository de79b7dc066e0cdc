"""Cliff detection on planted spectra: entk.analyses.spectrum (numpy only)."""

import inspect
import math
import statistics
import subprocess
import sys

import numpy as np
import pytest

from entk.analyses.spectrum import Cliff, cliff, cliff_scores, detect_cliff, find_cliffs


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
    code = "import sys; sys.modules['torch'] = None; import entk.analyses.spectrum, entk.analyses.claims; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def reference_scores(values, window=10, min_spread=0.1, floor=1e-12):
    """The module docstring's rule written out with plain Python: ratios and robust z-scores of a_p, p = 1 … k−1."""
    lam = [float(v) for v in values]
    top = max(abs(v) for v in lam)
    lam = [max(v, floor * top) for v in lam]
    ratios = [max(lam[i] / lam[i + 1], 1.0) for i in range(len(lam) - 1)]
    slopes = [math.log(r) / math.log((p + 1) / p) for p, r in enumerate(ratios, start=1)]
    scores = []
    for j, a in enumerate(slopes):
        around = slopes[max(0, j - window) : j] + slopes[j + 1 : j + 1 + window]
        if len(around) < 2:
            scores.append(0.0)
            continue
        centre = statistics.median(around)
        spread = max(1.4826 * statistics.median(abs(x - centre) for x in around), min_spread)
        scores.append((a - centre) / spread)
    return ratios, scores


def reference_cliffs(values, min_score=8.0, min_ratio=1.25, **kwargs):
    """Qualifying drops as (position, ratio, score); of each run of adjacent ones the highest score."""
    ratios, scores = reference_scores(values, **kwargs)
    runs: list[list[tuple[int, float, float]]] = []
    for j, (r, s) in enumerate(zip(ratios, scores, strict=True)):
        if s >= min_score and r >= min_ratio:
            if runs and runs[-1][-1][0] == j:
                runs[-1].append((j + 1, r, s))
            else:
                runs.append([(j + 1, r, s)])
    return [max(run, key=lambda c: c[2]) for run in runs]


def reference_spectra():
    """Small spectra where the window's edges, the MAD floor and adjacent drops all matter."""
    rng = np.random.default_rng(11)
    yield np.sort(rng.lognormal(0.0, 0.3, 30))[::-1] * np.repeat([8.0, 1.0], 15)  # one cliff mid-way
    yield np.concatenate([[50.0, 9.0], 8 * 0.97 ** np.arange(20)])  # a cliff after 1, at the left edge
    yield np.concatenate([10 * 0.97 ** np.arange(18), [1.0, 0.9]])  # a cliff 2 before the end
    yield np.concatenate([100 * 0.999 ** np.arange(12), [75.0], 40 * 0.999 ** np.arange(12)])  # two drops, 2nd higher
    yield np.concatenate([np.linspace(10, 8, 12), [0.0, -1e-15]]) * 1e6  # a rank, far from unit scale
    yield np.array([4.0, 3.9, 1.0, 0.97])  # three drops: every score has exactly two neighbours
    yield np.concatenate([np.full(6, 5.0), [1.0, 0.99, 0.98, 0.5, 0.49]])  # ties: the MAD floor
    yield np.concatenate([[9.0, 8.9, 8.8, 8.7, 2.0], 1.9 * 0.99 ** np.arange(10)])  # a cliff after 4


@pytest.mark.parametrize("settings", [{}, {"window": 2}, {"window": 3, "min_spread": 0.5, "floor": 1e-3}])
def test_scores_match_an_independent_computation(settings):
    for lam in reference_spectra():
        ratios, scores = cliff_scores(lam, **settings)
        want_ratios, want_scores = reference_scores(lam, **settings)
        np.testing.assert_allclose(ratios, want_ratios, rtol=1e-12)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-9, atol=1e-9)
        for thresholds in ({}, {"min_score": 3.0, "min_ratio": 1.05}):
            got = [tuple(c) for c in find_cliffs(lam, **settings, **thresholds)]
            want = reference_cliffs(lam, **settings, **thresholds)
            assert [c[0] for c in got] == [c[0] for c in want], (lam, settings, thresholds)
            np.testing.assert_allclose([c[1:] for c in got], [c[1:] for c in want], rtol=1e-9, atol=1e-9)


def test_scores_are_exact_in_float64_whatever_the_input_dtype():
    lam = next(reference_spectra()).astype(np.float32)
    ratios, scores = cliff_scores(lam)
    want_ratios, want_scores = reference_scores(lam.astype(np.float64))
    np.testing.assert_allclose(ratios, want_ratios, rtol=1e-13)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-10, atol=1e-10)
    # float32 would round the smallest positive float64 to zero, and 0/0 would outrank the real drop.
    assert cliff(np.array([1.0, 1e-30, 0.0, 0.0], dtype=np.float32)) == 2


def test_the_documented_defaults():
    # docs and config (claims.cliff_detector) describe the detector by these values.
    defaults = {
        name: p.default for name, p in inspect.signature(find_cliffs).parameters.items() if p.default is not p.empty
    }
    assert defaults == {"min_score": 8.0, "min_ratio": 1.25, "window": 10, "min_spread": 0.1, "floor": 1e-12}
    scores_defaults = {
        name: p.default for name, p in inspect.signature(cliff_scores).parameters.items() if p.default is not p.empty
    }
    assert scores_defaults == {"window": 10, "min_spread": 0.1, "floor": 1e-12}
    # A power law λ_i = 1/i has a_p = 1 at every drop and MAD 0, so its spread is min_spread = 0.1; an extra
    # factor f after 3 adds log f / log(4/3) to a_3. With log f = 0.85 log(4/3) the score is 8.5 by hand and
    # the ratio (4/3)·f ≈ 1.70: a cliff at the default min_score 8, none at 9.
    power = 1 / np.arange(1, 31)
    power[3:] /= np.exp(0.85 * np.log(4 / 3))
    (found,) = find_cliffs(power)
    assert (
        found.position == 3
        and found.score == pytest.approx(8.5)
        and found.ratio == pytest.approx(4 / 3 * (4 / 3) ** 0.85)
    )
    assert find_cliffs(power, min_score=9.0) == []
    lam = next(reference_spectra())
    assert detect_cliff(lam, window=3, min_score=3.0) == max(
        find_cliffs(lam, window=3, min_score=3.0), key=lambda c: c.score
    )
    assert [c.position for c in find_cliffs(lam)] == [c[0] for c in reference_cliffs(lam)] == [15]


def test_thresholds_are_inclusive():
    lam = plateaus([100.0, 30.0], [40, 40], slope=0.01, sd=0.01, seed=6)
    (only,) = find_cliffs(lam)
    assert find_cliffs(lam, min_ratio=only.ratio, min_score=only.score) == [only]


def test_the_most_prominent_of_several_cliffs():
    # Ratios 100, 2 and 1.25 after 5, 15 and 25 on flat plateaus: the first scores highest, not the last.
    lam = np.concatenate([np.full(5, 100.0), np.full(10, 1.0), np.full(10, 0.5), np.full(10, 0.4)])
    found = find_cliffs(lam, min_ratio=1.05)
    assert positions(found) == [5, 15, 25]
    assert detect_cliff(lam, min_ratio=1.05) == max(found, key=lambda c: c.score) == found[0]
    assert detect_cliff(lam, min_ratio=200.0) is None


class TensorLike:
    """What the detector accepts from torch without importing it: detach() → cpu() → numpy() or an array."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float32)

    def detach(self):
        return CpuTensorLike(self.values)


class CpuTensorLike(TensorLike):
    def cpu(self):
        return self

    def numpy(self):
        return self.values

    def __array__(self, dtype=None, copy=None):
        return self.values


def test_tensors_are_read_through_numpy():
    lam = plateaus([100.0, 30.0], [40, 40], slope=0.01, sd=0.01, seed=6)
    assert find_cliffs(TensorLike(lam)) == find_cliffs(lam.astype(np.float32))
    assert cliff(TensorLike(lam)) == cliff(lam) == 40


def test_short_spectra_and_bad_settings():
    assert find_cliffs([2.0, 1.0]) == [] and cliff([2.0, 1.0]) == 1
    with pytest.raises(ValueError, match="^a cliff needs at least two eigenvalues$"):
        cliff([2.0])
    with pytest.raises(ValueError, match=r"window must be at least 2 drops on each side, got 1"):
        cliff_scores(np.arange(10.0, 0, -1), window=1)
    assert cliff_scores(np.arange(10.0, 0, -1), window=2)[1].shape == (9,)
    with pytest.raises(ValueError, match=r"first at index 1\)"):
        find_cliffs([3.0, np.nan, 1.0])
    with pytest.raises(ValueError, match=r"λ rises by 1 at index 2 "):
        find_cliffs([3.0, 2.0, 3.0, 1.0])
    with pytest.raises(ValueError, match="^every eigenvalue is zero: a spectrum without scale has no cliffs$"):
        find_cliffs([0.0, 0.0])
    # Sorting noise within 1e-8 of the top is accepted, relative to the spectrum's scale.
    assert positions(find_cliffs(np.concatenate([[1e6, 1e6 - 1, 1e6 - 1 + 1e-3], np.full(20, 1e3)]))) == [3]
