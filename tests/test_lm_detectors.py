"""Detectors (docs/spec.md §4) against hand computations and brute-force definitions."""

import numpy as np
import pytest

from entk.analyses.detectors import (
    auroc,
    average_precision,
    check_labels,
    detect,
    mode_scores,
    pca_scores,
    precision_at_k,
    stratified_split,
    view_detectors,
)


def test_metrics_by_hand():
    # Ranking: + − + −. AP = (1/1 + 2/3)/2; AUROC: 3 of the 4 (pos, neg) pairs in order.
    scores, y = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])
    assert average_precision(scores, y) == pytest.approx(5 / 6)
    assert auroc(scores, y) == pytest.approx(0.75)
    assert precision_at_k(scores, y) == pytest.approx(0.5)
    assert precision_at_k(-scores, y, 1) == 0.0


def test_metrics_against_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores, y = rng.standard_normal(60), rng.random(60) < 0.3
        y[:2] = [True, False]
        # AP: for each positive, the share of positives among the samples scored at least as high.
        ap = np.mean([(y & (scores >= s)).sum() / (scores >= s).sum() for s in scores[y]])
        # AUROC: the Mann–Whitney share of (positive, negative) pairs ranked in order (no ties here).
        pairs = np.mean(scores[y][:, None] > scores[~y][None, :])
        top = np.argsort(-scores)[: y.sum()]
        assert average_precision(scores, y) == pytest.approx(ap)
        assert auroc(scores, y) == pytest.approx(pairs)
        assert precision_at_k(scores, y) == pytest.approx(y[top].mean())


def test_stratified_split_halves_every_class():
    labels = np.repeat(np.arange(4), [10, 6, 8, 4])
    train = stratified_split(labels, 0.5, seed=0)
    assert [int(train[labels == c].sum()) for c in range(4)] == [5, 3, 4, 2]
    assert np.array_equal(train, stratified_split(labels, 0.5, seed=0))
    assert not np.array_equal(train, stratified_split(labels, 0.5, seed=1))


def test_mode_scores_of_a_planted_rank_one_mode():
    # A mode u ⊗ w laid out class-major (c·N + n): as an (N, C) matrix it is σ u wᵀ, score ±σ u.
    rng = np.random.default_rng(0)
    n, c = 7, 3
    u, w = rng.standard_normal(n), rng.standard_normal(c)
    u, w = u / np.linalg.norm(u), w / np.linalg.norm(w)
    mode = np.array([2.5 * u[i] * w[j] for j in range(c) for i in range(n)])
    noise = rng.standard_normal((n * c, 1))
    scores = mode_scores(np.column_stack([mode, noise]), n)
    assert scores.shape == (n, 2)
    assert np.abs(scores[:, 0]) == pytest.approx(2.5 * np.abs(u))
    with pytest.raises(ValueError, match="not N·C"):
        mode_scores(noise[:20], n)


def test_pca_scores_are_centred_projections():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((50, 6)) @ np.diag([5, 3, 2, 1, 0.5, 0.1]) + 4.0
    scores = pca_scores(h, 3)
    vals, vecs = np.linalg.eigh(np.cov(h.T, bias=True))
    top = vecs[:, ::-1][:, :3]
    assert np.abs(scores) == pytest.approx(np.abs((h - h.mean(0)) @ top), abs=1e-9)


def test_detect_picks_the_planted_direction_and_sign():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    scores = rng.standard_normal((60, 5))
    scores[:, 3] = -5.0 * (labels == 1) + 0.1 * rng.standard_normal(60)
    table = detect(scores, labels, ["A", "B", "C"], stratified_split(labels)).set_index("class")
    assert (table.loc["B", "candidate"], table.loc["B", "sign"]) == (3, -1)
    assert table.loc["B", ["test_ap", "test_auroc", "test_precision_at_k"]].tolist() == [1.0, 1.0, 1.0]
    assert table.loc["B", "chance"] == pytest.approx(1 / 3)
    assert table.loc["A", "test_ap"] < 0.9


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match="N = 5 samples"):
        check_labels(np.zeros(4, int), 5, ["A"])
    with pytest.raises(ValueError, match="class B has 1 sample"):
        check_labels(np.array([0, 0, 1, 0]), 4, ["A", "B"])


def test_view_detectors_score_reduced_and_flattened_modes():
    rng = np.random.default_rng(0)
    n, c = 24, 3
    labels = np.repeat([0, 1, 2], 8)
    reduced = rng.standard_normal((n, 4))
    reduced[:, 2] = labels == 2  # a reduced kernel's eigenvector (D = N) marking label 2
    flat = rng.standard_normal((n * c, 4))
    flat[n : 2 * n, 1] = 3.0 * (labels == 0)  # a flattened mode (D = N·C) concentrated on label 0
    table = view_detectors({"diag": reduced, "flat": flat}, labels, n).set_index(["group", "class"])
    assert table.loc[("diag", "2"), ["candidate", "test_ap"]].tolist() == [2, 1.0]
    assert table.loc[("flat", "0"), ["candidate", "test_ap"]].tolist() == [1, 1.0]
    with pytest.raises(ValueError, match="integer labels"):
        view_detectors({"diag": reduced}, labels.astype(float), n)
