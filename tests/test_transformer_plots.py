"""What the Transformer figures draw (entk.figures.transformer_plots), read back from the artists: no torch."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from entk.figures.transformer_plots import fig_transformer, fig_transformer_layers


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_layers_heatmap_shows_each_overlap_over_its_maximum():
    # Each cell's maximum is its family's dimension in that group: 4, 4 and 2 (group 1–5), twice that (6–20).
    rows = [
        (tensor, group, family, overlap, of * size)
        for group, size in (("1–5", 1.0), ("6–20", 2.0))
        for tensor, scale in (("W_U", 1.0), ("W_E", 0.5))
        for family, overlap, of in (("sum", 3.0 * scale, 4.0), ("diff", 1.0 * scale, 4.0), ("axis_sum", 1.0, 2.0))
    ]
    table = pd.DataFrame(rows, columns=["tensor", "group", "family", "overlap", "of"])
    fig = fig_transformer_layers(table, [3, 7])
    heatmaps = [ax for ax in fig.axes if ax.images]
    for ax, size in zip(heatmaps, (1.0, 2.0), strict=True):
        shares = np.asarray(ax.images[0].get_array())
        np.testing.assert_allclose(shares, np.array([[3 / 4, 1 / 4, 1 / 2], [1.5 / 4, 0.5 / 4, 1 / 2]]) / size)
        assert [t.get_text() for t in ax.texts] == ["3.00", "1.00", "1.00", "1.50", "0.50", "1.00"]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["a+b", "a−b", "axis-sum"]
    assert fig.get_suptitle().endswith("at key frequencies 3, 7")


def test_grokking_figure_draws_accuracy_overlap_and_derivative():
    history = pd.DataFrame({"epoch": [0, 20, 40], "train_acc": [0.1, 1.0, 1.0], "test_acc": [0.0, 0.2, 0.9]})
    curve = pd.DataFrame({"epoch": [0, 20, 40], "overlap": [0.0, 2.0, 4.0], "of": 4, "d_overlap": [0.1, 0.15, 0.1]})
    fig = fig_transformer(history, curve, peak=20, grok=40, threshold=0.5)
    acc_ax, ov_ax, d_ax = fig.axes
    drawn = {ln.get_label(): ln.get_ydata() for ax in (acc_ax, ov_ax, d_ax) for ln in ax.get_lines()}
    np.testing.assert_array_equal(drawn["train"], history["train_acc"])
    np.testing.assert_array_equal(drawn["test"], history["test_acc"])
    np.testing.assert_array_equal(drawn["overlap, top 5 (left)"], curve["overlap"])
    np.testing.assert_array_equal(drawn["d overlap / d epoch (right)"], curve["d_overlap"])
    assert ov_ax.get_ylabel() == "overlap with a+b (of 4)"
