"""Detectors of labelled classes from scores (docs/spec.md §4): the author's one-vs-rest procedure.

For any experiment with labels: each candidate direction gives one score per sample (an eNTK mode's
first left singular vector times its singular value, a principal component's U·S, a random
direction's projection); per class, the best of the candidates × 2 signs by train average precision
on a stratified half is scored on the other half by average precision, AUROC and precision at k.
Torch-free (numpy), as every analysis.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DETECTOR_COLUMNS = ["class", "candidate", "sign", "train_ap", "test_ap", "test_auroc", "test_precision_at_k", "chance"]


def _ranked(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The labels in descending order of score (a stable sort: ties keep the samples' order)."""
    return np.asarray(y, dtype=bool)[np.argsort(-np.asarray(scores, dtype=float), kind="stable")]


def average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    """Non-interpolated AP = Σ_i precision@i · y_i / P over the ranking by descending score (N,)."""
    hits = _ranked(scores, y)
    if not hits.any():
        raise ValueError("average precision needs at least one positive sample")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / hits.sum())


def auroc(scores: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve: the trapezoid rule over cumulative (FPR, TPR), from (0, 0), with no
    tie handling (the author's)."""
    hits = _ranked(scores, y)
    n_pos, n_neg = hits.sum(), (~hits).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs positive and negative samples")
    tpr = np.concatenate([[0.0], np.cumsum(hits) / n_pos])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / n_neg])
    return float(np.trapezoid(tpr, fpr))


def precision_at_k(scores: np.ndarray, y: np.ndarray, k: int | None = None) -> float:
    """Share of positives among the k top-scored samples (k = the number of positives by default)."""
    hits = _ranked(scores, y)
    k = int(hits.sum()) if k is None else k
    return float(hits[:k].mean())


def stratified_split(labels: np.ndarray, train_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """Train mask (N,): per class, a random ``round(train_fraction · n_class)`` of its samples."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        train[rng.permutation(idx)[: round(train_fraction * len(idx))]] = True
    return train


def mode_scores(vectors: np.ndarray, n_samples: int) -> np.ndarray:
    """Per-sample scores (N, k) of eNTK modes (N·C, k), class-major (c·N + n): each mode as an
    (N, C) matrix scored by its first left singular vector times the singular value."""
    n_outputs = vectors.shape[0] // n_samples
    if n_outputs * n_samples != vectors.shape[0]:
        raise ValueError(f"modes of length {vectors.shape[0]} are not N·C with N = {n_samples} samples")
    mats = vectors.T.reshape(-1, n_outputs, n_samples).transpose(0, 2, 1)
    u, s, _ = np.linalg.svd(mats, full_matrices=False)
    return (u[:, :, 0] * s[:, :1]).T


def pca_scores(hidden: np.ndarray, q: int = 25) -> np.ndarray:
    """Scores U·S (N, q) of the top q principal components of activations (N, C), centred."""
    centred = hidden - hidden.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    return u[:, :q] * s[:q]


def detect(scores: np.ndarray, labels: np.ndarray, classes: list[str], train: np.ndarray) -> pd.DataFrame:
    """One row per class (``DETECTOR_COLUMNS``): the candidate (column of scores (N, m)) and sign
    with the best train AP for "this class vs the rest", and its test AP, AUROC and precision at k."""
    rows = []
    for c, name in enumerate(classes):
        y = np.asarray(labels) == c
        best = max(
            (
                (average_precision(sign * scores[train, j], y[train]), j, sign)
                for j in range(scores.shape[1])
                for sign in (1, -1)
            ),
            key=lambda t: t[0],
        )
        train_ap, j, sign = best
        test = sign * scores[~train, j]
        rows.append(
            {
                "class": name,
                "candidate": j,
                "sign": sign,
                "train_ap": train_ap,
                "test_ap": average_precision(test, y[~train]),
                "test_auroc": auroc(test, y[~train]),
                "test_precision_at_k": precision_at_k(test, y[~train]),
                "chance": float(y[~train].mean()),
            }
        )
    return pd.DataFrame(rows, columns=DETECTOR_COLUMNS)


def check_labels(labels: np.ndarray, n_samples: int, classes: list[str], train_fraction: float = 0.5) -> None:
    """Labels (N,) of class indices that the split can use; the error names the problem and the fix."""
    labels = np.asarray(labels)
    if labels.shape != (n_samples,):
        raise ValueError(
            f"labels have shape {labels.shape} but there are N = {n_samples} samples; give one label per sample"
        )
    counts = np.bincount(labels, minlength=len(classes))
    for name, n in zip(classes, counts, strict=False):
        n_train = round(train_fraction * n)
        if n_train < 1 or n - n_train < 1:
            raise ValueError(
                f"class {name} has {n} sample(s): too few for a train and a test half; give it at least 2 "
                "(or drop it from the classes)"
            )


def view_detectors(
    vectors: dict[str, np.ndarray], labels: np.ndarray, n_samples: int, *, train_fraction: float = 0.5, seed: int = 0
) -> pd.DataFrame:
    """Detectors of integer labels (N,) from each layer group's eigenvectors at one checkpoint
    {group: (D, k)}: one score per sample when D = N (a reduced kernel), else modes of length N·C
    scored by ``mode_scores``. Rows: group, then ``DETECTOR_COLUMNS`` per label."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("detectors need features that are integer labels (N,) ≥ 0, one per probe input")
    classes = [str(c) for c in range(labels.max() + 1)]
    check_labels(labels, n_samples, classes, train_fraction)
    train = stratified_split(labels, train_fraction, seed)
    parts = []
    for group, vecs in vectors.items():
        scores = vecs if vecs.shape[0] == n_samples else mode_scores(vecs, n_samples)
        parts.append(detect(scores, labels, classes, train).assign(group=group))
    return pd.concat(parts, ignore_index=True)[["group", *DETECTOR_COLUMNS]]
