"""Tests for entk.figures.plotting: each paper figure builds from small synthetic inputs, saves, rejects bad input."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from entk.figures.plotting import figure_1, figure_2, figure_3, figure_4, figure_5, figure_overlap

# p = 7: K = 3 frequencies; cliffs of N = 2(p − 1) = 12 eigenvalues each, after the isolated index 0.
P = 7
K, N = (P - 1) // 2, 2 * (P - 1)
CLIFFS = (slice(1, 1 + N), slice(1 + N, 1 + 2 * N))
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _spectrum(k: int = 40) -> np.ndarray:
    return np.sort(10 ** RNG.uniform(-6, 2, k))[::-1]


def _corr() -> np.ndarray:
    return RNG.uniform(0, 1, (K, N))


def _save(fig, tmp_path, name: str) -> None:
    for ext in ("png", "pdf"):
        path = tmp_path / f"{name}.{ext}"
        fig.savefig(path, dpi=50)
        assert path.stat().st_size > 0


def _history() -> pd.DataFrame:
    epochs = np.arange(0, 50)
    return pd.DataFrame(
        {"epoch": epochs, "train_acc": np.minimum(1, epochs / 10), "test_acc": np.minimum(1, epochs / 40)}
    )


def _overlap_inputs(n_epochs: int = 6) -> tuple[np.ndarray, dict, dict]:
    epochs = np.arange(n_epochs) * 10
    overlaps = {"sum": np.linspace(1, 5.5, n_epochs), "diff": np.linspace(0.5, 5, n_epochs)}
    derivatives = {name: np.gradient(v, epochs) for name, v in overlaps.items()}
    return epochs, overlaps, derivatives


def _tms_panel(m: int, sparsity: float, cliffs: dict[int, float], betas=(1.0, 0.3), k: int = 80, n: int = 50) -> dict:
    """A TMS panel: k eigenvalues decaying 1 % per index with a drop of the given ratio after each position."""
    steps = np.full(k - 1, 0.01)
    for position, ratio in cliffs.items():
        steps[position - 1] = np.log(ratio)
    lam = 500 * np.exp(-np.concatenate([[0.0], np.cumsum(steps)]))
    overlap = {b: RNG.uniform(0, 1, (n, k)) for b in betas}
    return {"m": m, "sparsity": sparsity, "eigenvalues": lam, "overlap": overlap}


def _cliff_lines(ax) -> list[float]:
    return sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--")


def test_figure_1(tmp_path):
    panels = [_tms_panel(10, 0.3, {50: 20.0}), _tms_panel(10, 0.9, {31: 2.4, 50: 1.8}), _tms_panel(40, 0.9, {})]
    fig = figure_1(panels, [1.0, 0.3])
    axes = np.array(fig.axes[:9]).reshape(3, 3)
    assert len(fig.axes) == 10  # 3 × (spectrum + 2 heatmaps) and one colour bar
    assert [ax.get_title() for ax in axes[0]] == ["m = 10, S = 0.3", "m = 10, S = 0.9", "m = 40, S = 0.9"]
    # Un-rescaled spectra on a linear axis from 0, the detector's cliffs marked after their last mode.
    assert all(ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0 for ax in axes[0])
    assert [_cliff_lines(ax) for ax in axes[0]] == [[50.5], [31.5, 50.5], []]
    texts = [t.get_text() for t in axes[0, 1].texts]
    assert texts == ["cliff after 31\nratio 2.40", "cliff after 50\nratio 1.80"]
    # Heatmaps: feature 0 at the bottom, eigenvector index 1..k across, the β in the first column's label.
    for i, beta in enumerate([1.0, 0.3], start=1):
        image = axes[i, 0].get_images()[0]
        assert image.origin == "lower" and image.get_extent() == [0.5, 80.5, -0.5, 49.5]
        np.testing.assert_array_equal(image.get_array(), panels[0]["overlap"][beta])
        assert axes[i, 0].get_ylabel() == f"β = {beta:g}\nfeature"
    _save(fig, tmp_path, "fig1")


def test_figure_1_passes_detector_settings():
    fig = figure_1([_tms_panel(10, 0.9, {31: 2.4, 50: 1.8})], [1.0], cliff_detector={"min_ratio": 2.0})
    assert _cliff_lines(fig.axes[0]) == [31.5]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda p: p["overlap"].pop(0.3), r"no overlap map for β = \[0.3\]"),
        (lambda p: p.pop("m"), "must have keys"),
        (lambda p: p["overlap"].__setitem__(1.0, np.full((50, 80), 1.5)), r"values in \[0, 1\]"),
        (lambda p: p.__setitem__("eigenvalues", np.array([3.0, np.nan, 1.0])), "NaN"),
    ],
)
def test_figure_1_rejects_bad_input(change, match):
    panel = _tms_panel(10, 0.3, {50: 20.0})
    change(panel)
    with pytest.raises(ValueError, match=match):
        figure_1([panel], [1.0, 0.3])
    with pytest.raises(ValueError, match="at least one"):
        figure_1([], [1.0])


def test_figure_2(tmp_path):
    fig = figure_2({"full": _spectrum(), "layer 1": _spectrum(), "layer 2": _spectrum()}, CLIFFS)
    assert len(fig.axes) == 3
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["cliff 1: a, b families", "cliff 2: a+b, a−b families"]
    _save(fig, tmp_path, "fig2")


def test_figure_2_masks_nonpositive_tail():
    lam = _spectrum()
    lam[-3:] = [0.0, -1e-12, -1e-10]
    fig = figure_2({"layer 2": lam}, CLIFFS)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "layer 2"]
    ydata = line.get_ydata()
    assert np.all(np.isnan(ydata[-3:])) and np.all(ydata[:-3] > 0)
    fig.canvas.draw()


@pytest.mark.parametrize(
    "spectra, cliffs, match",
    [
        ({}, CLIFFS, "at least one"),
        ({"full": _spectrum(20)}, CLIFFS, "outside"),
        ({"full": np.ones((4, 10))}, CLIFFS, "1-D"),
        ({"full": _spectrum()}, (slice(1, 13), slice(10, 25)), "before cliff 2"),
        ({"full": _spectrum()}, (slice(1, 13, 2), slice(13, 25)), "unit step"),
    ],
)
def test_figure_2_rejects_bad_input(spectra, cliffs, match):
    with pytest.raises(ValueError, match=match):
        figure_2(spectra, cliffs)


def test_figure_3(tmp_path):
    spectra = {e: _spectrum() for e in (40, 0, 20)}
    fig = figure_3(_history(), spectra, 30, CLIFFS)
    assert len(fig.axes) == 2
    assert fig.axes[1].get_yscale() == "log"
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert [t for t in legend if t.startswith("epoch")] == ["epoch 0", "epoch 20", "epoch 40"]
    assert "grokking (epoch 30)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    _save(fig, tmp_path, "fig3")
    assert figure_3(_history(), spectra, None, CLIFFS).axes[0].get_legend().get_texts()[-1].get_text() == "test"


def test_figure_3_rejects_bad_input():
    with pytest.raises(ValueError, match="lacks columns"):
        figure_3(_history().drop(columns="test_acc"), {0: _spectrum()}, None, CLIFFS)
    with pytest.raises(ValueError, match="fractions"):
        figure_3(_history().assign(test_acc=lambda h: 100 * h.test_acc), {0: _spectrum()}, None, CLIFFS)
    with pytest.raises(ValueError, match="at least one"):
        figure_3(_history(), {}, None, CLIFFS)


def test_figure_4(tmp_path):
    fig = figure_4({"a": _corr(), "b": _corr()}, {"a": _corr(), "b": _corr()})
    assert len(fig.axes) == 5  # 2 × 2 heatmaps + one shared colorbar
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["1", "2", "3"]
    assert fig.axes[-1].get_ylim() == (0.0, 1.0)
    _save(fig, tmp_path, "fig4")


@pytest.mark.parametrize(
    "raw, rotated, match",
    [
        ({"a": _corr(), "b": _corr()[:, :-1]}, {"a": _corr(), "b": _corr()}, "shape"),
        ({"a": _corr(), "b": _corr()}, {"a": _corr(), "b": _corr().T}, "shape"),
        ({"a": _corr(), "c": _corr()}, {"a": _corr(), "b": _corr()}, "keys"),
        ({"a": _corr(), "b": _corr()}, {"a": _corr()}, "keys"),
        ({"a": _corr(), "b": 2 * _corr() + 1}, {"a": _corr(), "b": _corr()}, r"\[0, 1\]"),
        ({"a": _corr()[0], "b": _corr()}, {"a": _corr(), "b": _corr()}, "2-D"),
    ],
)
def test_figure_4_rejects_bad_input(raw, rotated, match):
    with pytest.raises(ValueError, match=match):
        figure_4(raw, rotated)


def test_figure_5(tmp_path):
    epochs = (40, 100, 500)
    fig = figure_5({e: {"sum": _corr(), "diff": _corr()} for e in reversed(epochs)})
    assert len(fig.axes) == 2 * len(epochs) + 1
    assert [ax.get_title() for ax in fig.axes[: len(epochs)]] == [f"epoch {e}" for e in epochs]
    _save(fig, tmp_path, "fig5")


def test_figure_5_rejects_bad_input():
    with pytest.raises(ValueError, match="keys"):
        figure_5({40: {"sum": _corr(), "a-b": _corr()}})
    with pytest.raises(ValueError, match="shape"):
        figure_5({40: {"sum": _corr(), "diff": _corr()}, 60: {"sum": _corr()[:, :5], "diff": _corr()}})
    with pytest.raises(ValueError, match="at least one"):
        figure_5({})


def test_figure_overlap(tmp_path):
    epochs, overlaps, derivatives = _overlap_inputs()
    fig = figure_overlap(epochs, overlaps, derivatives, 6, 30, 20)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_ylim()[1] >= 6
    assert "derivative peak (epoch 20)" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    _save(fig, tmp_path, "fig_overlap")
    no_marks = figure_overlap(epochs, overlaps, derivatives, 6, None, None)
    assert len(no_marks.axes[1].get_lines()) == 3  # two series and the zero line, no epoch markers


def test_figure_overlap_rejects_bad_input():
    epochs, overlaps, derivatives = _overlap_inputs()
    with pytest.raises(ValueError, match="keys"):
        figure_overlap(epochs, {"sum": overlaps["sum"]}, derivatives, 6, None, None)
    with pytest.raises(ValueError, match="shape"):
        figure_overlap(epochs, overlaps, {**derivatives, "diff": derivatives["diff"][1:-1]}, 6, None, None)
    with pytest.raises(ValueError, match="n_family"):
        figure_overlap(epochs, overlaps, derivatives, 4, None, None)
    with pytest.raises(ValueError, match="increasing"):
        figure_overlap(epochs[::-1], overlaps, derivatives, 6, None, None)


# What is drawn, read back from the artists: a figure that draws the wrong numbers fails here even
# when its layout is right.


def _heatmap_cells(ax) -> np.ndarray:
    """The (K, k) array an axes' one heatmap shows, with row 0 = frequency 1 (at the top)."""
    (image,) = ax.get_images()
    assert image.get_extent()[2] > image.get_extent()[3]  # frequency 1 at the top, as in the paper
    return np.asarray(image.get_array())


def test_figure_1_draws_each_spectrum_and_each_map():
    panels = [_tms_panel(10, 0.3, {50: 20.0}), _tms_panel(40, 0.9, {})]
    fig = figure_1(panels, [1.0, 0.3])
    axes = np.array(fig.axes[:6]).reshape(3, 2)
    for j, panel in enumerate(panels):
        (line,) = axes[0, j].get_lines()[:1]
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 81))
        np.testing.assert_array_equal(line.get_ydata(), panel["eigenvalues"])
        np.testing.assert_array_equal(axes[0, j].collections[0].get_offsets()[:, 1], panel["eigenvalues"])
        for i, beta in enumerate([1.0, 0.3], start=1):
            np.testing.assert_array_equal(axes[i, j].get_images()[0].get_array(), panel["overlap"][beta])


def test_figure_2_draws_each_spectrum_from_index_0():
    spectra = {"full": _spectrum(), "layer 1": _spectrum()}
    fig = figure_2(spectra, CLIFFS)
    for ax, (name, lam) in zip(fig.axes, spectra.items(), strict=True):
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == name]
        np.testing.assert_array_equal(line.get_xdata(), np.arange(lam.size))
        np.testing.assert_array_equal(line.get_ydata(), lam)
        shaded = sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches)
        assert shaded == [(0.5, 12.5), (12.5, 24.5)]


def test_figure_3_draws_accuracy_and_spectra_by_epoch():
    history = _history()
    spectra = {e: _spectrum() for e in (40, 0, 20)}
    fig = figure_3(history, spectra, 30, CLIFFS)
    ax_acc, ax_spec = fig.axes
    train, test = ax_acc.get_lines()[:2]
    np.testing.assert_array_equal(train.get_xdata(), history["epoch"])
    np.testing.assert_array_equal(train.get_ydata(), history["train_acc"])
    np.testing.assert_array_equal(test.get_ydata(), history["test_acc"])
    for epoch in spectra:
        (line,) = [ln for ln in ax_spec.get_lines() if ln.get_label() == f"epoch {epoch}"]
        np.testing.assert_array_equal(line.get_ydata(), spectra[epoch])


def test_figure_4_draws_each_correlation_in_its_panel():
    raw, rotated = {"a": _corr(), "b": _corr()}, {"a": _corr(), "b": _corr()}
    fig = figure_4(raw, rotated)
    panels = {ax.get_title(): ax for ax in fig.axes[:4]}
    for row, maps in (("raw eigenvectors", raw), ("rotated basis", rotated)):
        for family in ("a", "b"):
            ax = panels[f"{row} vs {family}-family"]
            np.testing.assert_array_equal(_heatmap_cells(ax), maps[family])
            assert ax.get_images()[0].get_extent() == [0.5, N + 0.5, K + 0.5, 0.5]
            assert ax.get_images()[0].get_clim() == (0, 1)


def test_figure_5_draws_each_epoch_and_family():
    maps = {e: {"sum": _corr(), "diff": _corr()} for e in (100, 40)}
    fig = figure_5(maps)
    axes = np.array(fig.axes[:4]).reshape(2, 2)
    for j, epoch in enumerate((40, 100)):
        for i, family in enumerate(("sum", "diff")):
            np.testing.assert_array_equal(_heatmap_cells(axes[i, j]), maps[epoch][family])


def test_figure_overlap_draws_the_curves_and_their_derivatives():
    epochs, overlaps, derivatives = _overlap_inputs()
    fig = figure_overlap(epochs, overlaps, derivatives, 6, 30, 20)
    ax_ov, ax_d = fig.axes[:2]
    for ax, series in ((ax_ov, overlaps), (ax_d, derivatives)):
        drawn = {ln.get_label(): ln for ln in ax.get_lines()}
        for family, label in (("sum", "a+b family"), ("diff", "a−b family")):
            np.testing.assert_array_equal(drawn[label].get_xdata(), epochs)
            np.testing.assert_array_equal(drawn[label].get_ydata(), series[family])
    assert [ln.get_xdata()[0] for ln in ax_d.get_lines() if ln.get_linestyle() == ":"] == [20]
