"""Tests for entk.analyses.analysis: planted eigenpairs with known answers, written as small eigen files."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from entk.analyses.analysis import (
    cliffs_table,
    feature_overlap_table,
    full_group,
    load_eigen,
    localisation_table,
    phase_k,
    phase_peak,
    phase_table,
    spectra_table,
)
from entk.figures.experiment_plots import plot_phases, plot_spectra, plot_spectrum_over_checkpoints
from entk.shared import UnreadableFileError

N = 30
RNG = np.random.default_rng(0)


class Cliff(NamedTuple):
    position: int
    ratio: float
    score: float


def ratio_cliffs(values: np.ndarray) -> list[Cliff]:
    """Stand-in for entk.analyses.spectrum.find_cliffs: every gap with λ_i / λ_i+1 ≥ 2."""
    r = values[:-1] / values[1:]
    return [Cliff(int(i) + 1, float(r[i]), float(np.log(r[i]))) for i in np.flatnonzero(r >= 2)]


def centred_basis(n: int, *fixed: np.ndarray) -> np.ndarray:
    """Orthonormal (n, n − 1) basis ⊥ the constant vector whose leading columns span ``fixed`` (in order)."""
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), *fixed, RNG.normal(size=(n, n))]))
    return q[:, 1:n]


def spectrum(k: int, cliffs: tuple[int, ...] = (3, 6)) -> np.ndarray:
    """Descending (k,) eigenvalues: a factor-10 gap after each position in ``cliffs`` (below k), 1 % steps elsewhere."""
    gaps = np.full(k - 1, 0.99)
    gaps[[c - 1 for c in cliffs if c < k]] = 0.1
    return np.cumprod(np.r_[100.0, gaps])


def write_eigen(path, steps, groups: dict, outputs="diag_mean", n_outputs=1, n_samples=N, drop=None, steps_as=None):
    """Save an eigen file in the contract's format; groups: name → (values (T, k), vectors (T, D, k), params)."""
    data = {
        "steps": np.asarray(steps, dtype=np.int64),
        "groups": np.array(list(groups)),
        "inputs": np.arange(n_samples, dtype=np.int64)[:, None],
        "outputs": np.array(outputs),
        "n_outputs": np.array(n_outputs),
        "n_samples": np.array(n_samples),
    }
    for g, (lam, vec, params) in groups.items():
        data[f"values/{g}"], data[f"vectors/{g}"], data[f"params/{g}"] = lam, vec, np.array(params)
    if steps_as is not None:
        data["steps"] = steps_as
    data.pop(drop, None)
    np.savez(path, **data)
    return path


@pytest.fixture
def layered(tmp_path):
    """Two checkpoints; full = {W1, W2}; l1's top 3 = full's top 3 (rotated within); l2's top 3 ⊥ them."""
    basis = centred_basis(N)
    k = 8
    within = np.linalg.qr(RNG.normal(size=(3, 3)))[0]
    full_vec = basis[:, :k]
    l1_vec = np.column_stack([basis[:, :3] @ within, basis[:, 10 : 10 + k - 3]])
    l2_vec = np.column_stack([basis[:, 3:6], basis[:, 12 : 12 + k - 3]])
    lam = spectrum(k)
    groups = {
        "full": (np.stack([lam, 2 * lam]), np.stack([full_vec] * 2), ["W1", "W2"]),
        "l1": (np.stack([lam, lam]), np.stack([l1_vec] * 2), ["W1"]),
        "l2": (np.stack([lam, lam]), np.stack([l2_vec] * 2), ["W2"]),
    }
    return write_eigen(tmp_path / "eigen.npz", [0, 100], groups)


def test_analysis_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import entk.analyses.analysis, entk.figures.experiment_plots"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_eigen_roundtrip(layered):
    eig = load_eigen(layered)
    assert eig.groups == ["full", "l1", "l2"] and eig.steps.tolist() == [0, 100]
    assert eig.vectors["l1"].shape == (2, N, 8) and eig.params["full"] == ["W1", "W2"]
    assert (eig.outputs, eig.n_outputs, eig.n_samples) == ("diag_mean", 1, N)
    assert eig.index(-1) == 1 and eig.index(100) == 1 and eig.index(-2) == 0
    with pytest.raises(IndexError, match="^checkpoint index -3 out of range for 2 checkpoints$"):
        eig.index(-3)
    with pytest.raises(KeyError, match=r"no checkpoint at step 5; steps are \[0, 100\]"):
        eig.index(5)


def test_load_eigen_names_missing_key(tmp_path):
    lam, vec = spectrum(4)[None], np.eye(N)[None, :, :4]
    path = write_eigen(tmp_path / "x.npz", [0], {"g": (lam, vec, ["W"])}, drop="vectors/g")
    with pytest.raises(ValueError, match=r"x\.npz.*missing key 'vectors/g'"):
        load_eigen(path)


@pytest.mark.parametrize(
    "steps, lam, vec, outputs, match",
    [
        ([0], spectrum(4)[None], np.eye(N)[None, :, :3], "diag_mean", "vectors/g"),  # k disagrees
        ([0, 1], spectrum(4)[None], np.eye(N)[None, :, :4], "diag_mean", "values/g"),  # T disagrees
        ([0], spectrum(4)[None], np.eye(N)[None, :, :4], "flatten", r"D = 60"),  # flatten needs C·N rows
        ([5, 1], np.stack([spectrum(4)] * 2), np.stack([np.eye(N)[:, :4]] * 2), "diag_mean", "ascending"),
    ],
)
def test_load_eigen_checks_shapes(tmp_path, steps, lam, vec, outputs, match):
    path = write_eigen(tmp_path / "x.npz", steps, {"g": (lam, vec, ["W"])}, outputs=outputs, n_outputs=2)
    with pytest.raises(ValueError, match=match):
        load_eigen(path)


@pytest.mark.parametrize(
    "steps, match",
    [
        (np.array([0.0, 1.0]), r"key 'steps' must be a non-empty 1-D integer array, got float64 \(2,\)"),
        (np.zeros((0,), dtype=np.int64), r"key 'steps' must be a non-empty 1-D integer array, got int64 \(0,\)"),
        (np.array([0, 1, 1]), r"key 'steps' must be strictly ascending, got \[0, 1, 1\]"),
    ],
)
def test_load_eigen_checks_steps(tmp_path, steps, match):
    t = max(len(steps), 1)
    lam, vec = np.stack([spectrum(4)] * t), np.stack([np.eye(N)[:, :4]] * t)
    with pytest.raises(ValueError, match=match):
        load_eigen(write_eigen(tmp_path / "x.npz", [0], {"g": (lam, vec, ["W"])}, steps_as=steps))


def test_load_eigen_keeps_steps_integer_and_inputs(tmp_path):
    lam, vec = np.stack([spectrum(4)] * 2), np.stack([np.eye(N)[:, :4]] * 2)
    eig = load_eigen(write_eigen(tmp_path / "x.npz", [0, 7], {"g": (lam, vec, ["W"])}))
    assert eig.steps.dtype == np.int64 and eig.inputs.shape == (N, 1) and eig.inputs[5, 0] == 5
    with pytest.raises(ValueError, match=r"key 'values/g' has shape \(4,\), expected \(T, k\) with T = 2"):
        load_eigen(write_eigen(tmp_path / "y.npz", [0, 7], {"g": (spectrum(4), vec, ["W"])}))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "x.npz").read_bytes()[:100])
    with pytest.raises(UnreadableFileError, match="is not a readable eigen file"):
        load_eigen(tmp_path / "cut.npz")


def test_spectra_table(layered):
    eig = load_eigen(layered)
    tab = spectra_table(eig, "exp", "view")
    assert len(tab) == 3 * 2 * 8 and set(tab["experiment"]) == {"exp"} and set(tab["view"]) == {"view"}
    row = tab[(tab.layer == "full") & (tab.step == 100) & (tab["index"] == 4)]
    assert row["eigenvalue"].item() == pytest.approx(2 * spectrum(8)[3])
    assert list(tab.columns) == ["experiment", "view", "step", "layer", "index", "eigenvalue"]
    assert tab.index.tolist() == list(range(len(tab)))
    wide = tab[tab.layer == "l2"].pivot(index="step", columns="index", values="eigenvalue")
    np.testing.assert_allclose(wide.to_numpy(), eig.values["l2"])


def test_cliffs_table(layered):
    tab = cliffs_table(load_eigen(layered), "exp", "view", find_cliffs=ratio_cliffs)
    one = tab[(tab.layer == "l1") & (tab.step == 0)]
    assert one["position"].tolist() == [3, 6] and one["first"].tolist() == [1, 4] and one["cliff"].tolist() == [1, 2]
    np.testing.assert_allclose(one["ratio"], [10, 10])
    assert len(tab) == 3 * 2 * 2


def test_localisation_planted(layered):
    eig = load_eigen(layered)
    assert full_group(eig) == "full"
    every = localisation_table(eig, find_cliffs=ratio_cliffs)  # k = each cliff of the full kernel: 3, 6
    assert set(every["k"]) == {3, 6}
    tab = every[every["k"] == 3]
    loc = tab.set_index(["step", "layer"])["localisation"]
    np.testing.assert_allclose(loc.xs("l1", level="layer"), 1, atol=1e-12)
    np.testing.assert_allclose(loc.xs("l2", level="layer"), 0, atol=1e-12)
    # k = 6: l1 shares the first 3 of full's top 6 and l2 the next 3: half each.
    np.testing.assert_allclose(localisation_table(eig, k=6)["localisation"], 0.5, atol=1e-12)


def test_localisation_without_full_group(tmp_path):
    lam, vec = spectrum(4)[None], np.eye(N)[None, :, :4]
    path = write_eigen(tmp_path / "x.npz", [0], {"a": (lam, vec, ["W1"]), "b": (lam, vec, ["W2"])})
    assert localisation_table(load_eigen(path), k=2).empty


def rotating_file(tmp_path, steps, switch: int, k: int = 4):
    """Top-k eigenspace A before step ``switch``, halfway (A + B)/√2 at it, B after; a fixed group beside it."""
    basis = centred_basis(N)
    a, b, rest = basis[:, :k], basis[:, k : 2 * k], basis[:, 2 * k : 2 * k + 2]
    vecs = [a if s < switch else b if s > switch else (a + b) / np.sqrt(2) for s in steps]
    vec = np.stack([np.column_stack([v, rest]) for v in vecs])
    lam = np.stack([spectrum(k + 2, (k,)) * (2.0 if s >= switch else 1.0) for s in steps])
    groups = {"moving": (lam, vec, ["W1"]), "fixed": (lam, np.stack([np.column_stack([a, rest])] * len(steps)), ["W2"])}
    return write_eigen(tmp_path / "rot.npz", steps, groups)


def test_phase_peak_at_planted_rotation(tmp_path):
    steps = np.arange(0, 110, 10)
    eig = load_eigen(rotating_file(tmp_path, steps, switch=60))
    assert phase_k(eig, ratio_cliffs) == {"moving": 4, "fixed": 4}
    tab = phase_table(eig, find_cliffs=ratio_cliffs)
    mov = tab[tab.layer == "moving"].set_index("step")
    np.testing.assert_allclose(mov["overlap_final"], np.where(steps < 60, 0, np.where(steps > 60, 1, 0.5)), atol=1e-12)
    np.testing.assert_allclose(mov["overlap_next"].loc[[50, 60]], 0.5, atol=1e-12)
    np.testing.assert_allclose(mov["overlap_next"].drop([50, 60, 100]), 1, atol=1e-12)
    assert np.isnan(mov["overlap_next"].loc[100])
    # Central differences over 20 steps: 0.5 at 50 and 70, 1 at 60.
    np.testing.assert_allclose(
        mov["d_overlap_final"], np.select([steps == 60, np.isin(steps, [50, 70])], [0.05, 0.025])
    )
    assert phase_peak(tab, "moving") == 60
    # Eigenvalues double between steps 50 and 60: |Δ log λ| = ln 2 over the two 10-step intervals around them.
    expected = np.where(np.isin(steps, [50, 60]), np.log(2) / 20, 0)
    np.testing.assert_allclose(mov["spectrum_change"], expected, atol=1e-12)
    assert phase_peak(tab, "fixed") is None
    with pytest.raises(KeyError, match="nope"):
        phase_peak(tab, "nope")


def test_phase_peak_uneven_steps(tmp_path):
    # Symmetric intervals (5, 7, 9) around the switch, so the fastest motion is centred on it.
    steps = np.array([0, 1, 2, 5, 7, 9, 20, 50])
    tab = phase_table(load_eigen(rotating_file(tmp_path, steps, switch=7)), k=4)
    assert phase_peak(tab, "moving") == 7


def test_phase_derivatives_use_the_step_spacing(tmp_path):
    # overlap_final (0, 0, 0.5, 1, 1) and log λ rising by ln 2 at the switch, on intervals 10, 30, 20, 40.
    # np.gradient's second-order rule, by hand: f'_i = (h₋² f_i+1 + (h₊² − h₋²) f_i − h₊² f_i−1) / (h₋ h₊ (h₋ + h₊))
    # with h₋ = s_i − s_i−1, h₊ = s_i+1 − s_i; one-sided differences at the ends.
    steps = np.array([0, 10, 40, 60, 100])
    tab = phase_table(load_eigen(rotating_file(tmp_path, steps, switch=40)), k=4)
    mov = tab[tab.layer == "moving"]
    np.testing.assert_allclose(mov["d_overlap_final"], [0, 1 / 240, 13 / 600, 1 / 60, 0], atol=1e-12)
    ln2 = np.log(2)
    np.testing.assert_allclose(mov["spectrum_change"], [0, ln2 / 120, ln2 / 75, 0, 0], atol=1e-12)
    assert phase_peak(tab, "moving") == 40


def test_phase_needs_two_checkpoints(layered, tmp_path):
    lam, vec = spectrum(4)[None], np.eye(N)[None, :, :4]
    with pytest.raises(ValueError, match="two checkpoints"):
        phase_table(load_eigen(write_eigen(tmp_path / "x.npz", [0], {"g": (lam, vec, ["W"])})), k=2)
    with pytest.raises(ValueError, match=r"k = 9"):
        phase_table(load_eigen(layered), k=9)


def test_feature_overlap_labels_in_cliff(tmp_path):
    labels = np.repeat([0, 1, 2], N // 3)
    onehot = np.eye(3)[labels]
    # Cliff 1 (3 vectors) holds the 2-dim span of the centred one-hot labels; cliff 2 is orthogonal to it.
    basis = centred_basis(N, onehot[:, 0], onehot[:, 1])
    lam = spectrum(8)[None]
    eig = load_eigen(write_eigen(tmp_path / "x.npz", [0], {"g": (lam, basis[None, :, :8], ["W"])}))
    tab = feature_overlap_table(eig, labels, find_cliffs=ratio_cliffs).set_index(["cliff", "feature"])
    np.testing.assert_allclose(tab.loc[1, "overlap"], 1, atol=1e-12)
    np.testing.assert_allclose(tab.loc[2, "overlap"], 0, atol=1e-12)
    assert tab.loc[(1, "(family)"), "dim"] == 2 and tab.loc[(1, "0"), "dim"] == 1


def test_feature_overlap_partial_and_constant(tmp_path):
    basis = centred_basis(N)
    # f = half in cliff 1 (columns 0–2), half in cliff 2 (3–5): overlap 1/2 with each.
    f = basis[:, 0] + basis[:, 4]
    features = np.column_stack([f, np.ones(N), basis[:, 1]])
    eig = load_eigen(write_eigen(tmp_path / "x.npz", [0], {"g": (spectrum(8)[None], basis[None, :, :8], ["W"])}))
    cliffs = cliffs_table(eig, find_cliffs=ratio_cliffs)
    tab = feature_overlap_table(eig, features, cliffs, names=["f", "const", "e1"]).set_index(["cliff", "feature"])
    assert tab.loc[(1, "f"), "overlap"] == pytest.approx(0.5) and tab.loc[(2, "f"), "overlap"] == pytest.approx(0.5)
    assert np.isnan(tab.loc[(1, "const"), "overlap"])
    assert tab.loc[(1, "e1"), "overlap"] == pytest.approx(1) and tab.loc[(2, "e1"), "overlap"] == pytest.approx(0)
    # Family span {f, e1} (2-dim) against cliff 1 (3-dim): ‖Qᵀ U‖² = 1/2 + 1 over min(2, 3).
    assert tab.loc[(1, "(family)"), "overlap"] == pytest.approx(0.75)


def test_feature_overlap_flatten_lifts_to_class_blocks(tmp_path):
    n, c = 15, 2
    f, g = centred_basis(n)[:, :2].T
    # Cliff 1 = {e_0 ⊗ f, e_1 ⊗ f}: f's whole lifted span, orthogonal to g's.
    e0f, e1f, e0g, e1g = (np.kron(np.eye(c)[i], v) for i, v in ((0, f), (1, f), (0, g), (1, g)))
    vec = np.column_stack([e0f, e1f, e0g, e1g])[None]
    lam = spectrum(4, (2,))[None]
    path = write_eigen(tmp_path / "x.npz", [0], {"g": (lam, vec, ["W"])}, outputs="flatten", n_outputs=c, n_samples=n)
    eig = load_eigen(path)
    tab = feature_overlap_table(eig, np.column_stack([f, g]), names=["f", "g"], find_cliffs=ratio_cliffs)
    tab = tab.set_index(["cliff", "feature"])
    assert tab.loc[(1, "f"), "overlap"] == pytest.approx(1) and tab.loc[(1, "g"), "overlap"] == pytest.approx(0)
    assert tab.loc[(1, "f"), "dim"] == c and tab.loc[(1, "(family)"), "dim"] == 2 * c
    # The family's lifted span (4-dim) is the whole file; cliff 1 (2-dim) lies in it.
    assert tab.loc[(1, "(family)"), "overlap"] == pytest.approx(1)
    # A cliff holding one class block of f and one of g: half of each feature's lifted span.
    vec2 = np.column_stack([e0f, e1g, e1f, e0g])[None]
    path2 = write_eigen(tmp_path / "y.npz", [0], {"g": (lam, vec2, ["W"])}, outputs="flatten", n_outputs=c, n_samples=n)
    tab2 = feature_overlap_table(load_eigen(path2), np.column_stack([f, g]), names=["f", "g"], find_cliffs=ratio_cliffs)
    np.testing.assert_allclose(tab2[(tab2.cliff == 1) & (tab2.feature != "(family)")]["overlap"], 0.5)


@pytest.fixture
def _close_figures():
    yield
    plt.close("all")


def _vlines(ax) -> list[float]:
    return sorted(float(ln.get_xdata()[0]) for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1)


def test_plot_spectra_marks_cliffs(layered, tmp_path, _close_figures):
    eig = load_eigen(layered)
    fig = plot_spectra(eig, step=100, cliffs=cliffs_table(eig, find_cliffs=ratio_cliffs))
    assert [ax.get_title() for ax in fig.axes] == ["full", "l1", "l2"]
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    assert _vlines(fig.axes[1]) == [3.5, 6.5]
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), 2 * spectrum(8))
    fig.savefig(tmp_path / "spectra.png", dpi=50)


def test_plot_spectra_overlays_many_groups(tmp_path, _close_figures):
    lam, vec = np.stack([spectrum(6), spectrum(6)]), np.stack([np.eye(N)[:, :6]] * 2)
    groups = {f"g{i}": (lam * (i + 1), vec, [f"W{i}"]) for i in range(6)}
    fig = plot_spectra(load_eigen(write_eigen(tmp_path / "x.npz", [0, 1], groups)), cliffs={"g0": [3]})
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 6
    # Overlaid spectra are drawn relative to their own top eigenvalue.
    np.testing.assert_allclose(ax.get_lines()[5].get_ydata(), spectrum(6) / spectrum(6)[0])


def test_plot_spectrum_over_checkpoints(tmp_path, _close_figures):
    steps = np.arange(0, 110, 10)
    eig = load_eigen(rotating_file(tmp_path, steps, switch=60))
    fig = plot_spectrum_over_checkpoints(eig, "moving", cliffs={"moving": [4]})
    assert len(fig.axes[0].get_lines()) == len(steps) + 1  # one line per checkpoint, one cliff marker
    fig.savefig(tmp_path / "over.png", dpi=50)
    with pytest.raises(KeyError, match="nope"):
        plot_spectrum_over_checkpoints(eig, "nope")


def test_plot_phases_marks_peak(tmp_path, _close_figures):
    steps = np.arange(0, 110, 10)
    tab = phase_table(load_eigen(rotating_file(tmp_path, steps, switch=60)), k=4)
    fig = plot_phases(tab, marks={"planted": 60})
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "moving (k = 4): peak 60" in legend and "fixed (k = 4): no transition" in legend
    assert 60.0 in _vlines(fig.axes[1])
    fig.savefig(tmp_path / "phases.png", dpi=50)


def test_spectrum_over_checkpoints_draws_each_spectrum_and_the_gap_ratios(tmp_path, _close_figures):
    steps = np.array([0, 10, 40, 60, 100])
    eig = load_eigen(rotating_file(tmp_path, steps, switch=40))
    fig = plot_spectrum_over_checkpoints(eig, "moving")
    ax_l, ax_h = fig.axes[:2]
    lam = eig.values["moving"]
    for t, line in enumerate(ax_l.get_lines()):
        np.testing.assert_array_equal(line.get_ydata(), lam[t])
    (mesh,) = ax_h.collections
    gaps = [[np.log10(row[i] / row[i + 1]) for i in range(row.size - 1)] for row in lam]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(len(steps), -1), gaps, rtol=1e-12)
    # Rows span halfway to the neighbouring checkpoints: uneven steps are drawn to scale.
    edges = np.unique(mesh.get_coordinates()[:, :, 1])
    np.testing.assert_allclose(edges, [-5, 5, 25, 50, 80, 120])


def test_plot_phases_draws_the_table(tmp_path, _close_figures):
    steps = np.array([0, 10, 40, 60, 100])
    tab = phase_table(load_eigen(rotating_file(tmp_path, steps, switch=40)), k=4)
    fig = plot_phases(tab)
    ax_ov, ax_d, ax_s = fig.axes
    for i, layer in enumerate(("moving", "fixed")):
        rows = tab[tab.layer == layer]
        final, following = [ln for ln in ax_ov.get_lines() if len(ln.get_xdata()) == len(steps)][2 * i : 2 * i + 2]
        np.testing.assert_array_equal(final.get_ydata(), rows["overlap_final"])
        np.testing.assert_array_equal(following.get_ydata(), rows["overlap_next"])
        (deriv,) = [ln for ln in ax_d.get_lines() if ln.get_label().startswith(f"{layer} (k = 4)")]
        np.testing.assert_array_equal(deriv.get_xdata(), steps)
        np.testing.assert_array_equal(deriv.get_ydata(), rows["d_overlap_final"])
    change = ax_s.get_lines()[0].get_ydata()
    expected = tab.loc[tab.layer == "moving", "spectrum_change"].to_numpy()
    np.testing.assert_array_equal(change, np.where(expected > 0, expected, np.nan))


def test_tables_take_the_callers_cliff_rule_and_the_default_otherwise(tmp_path):
    # A rule that reports two fixed cliffs out of order: numbered by position, each starting after the last.
    # Plain records, not tuples: a rule's cliffs need only position, ratio and score.
    def fixed(values):
        return [SimpleNamespace(position=5, ratio=1.5, score=2.0), SimpleNamespace(position=2, ratio=3.0, score=4.0)]

    basis = centred_basis(N)
    lam = spectrum(8, cliffs=(3,))[None]
    eig = load_eigen(write_eigen(tmp_path / "x.npz", [4], {"g": (lam, basis[None, :, :8], ["W"])}))
    tab = cliffs_table(eig, find_cliffs=fixed)
    assert list(tab.columns) == ["experiment", "view", "step", "layer", "cliff", "position", "first", "ratio", "score"]
    assert tab[["experiment", "view", "step", "layer"]].drop_duplicates().values.tolist() == [["", "", 4, "g"]]
    assert tab[["cliff", "position", "first", "ratio", "score"]].values.tolist() == [
        [1, 2, 1, 3.0, 4.0],
        [2, 5, 3, 1.5, 2.0],
    ]
    features = basis[:, [0, 3]]
    over = feature_overlap_table(eig, features, names=["f0", "f3"], find_cliffs=fixed)
    assert list(over.columns) == ["step", "layer", "cliff", "first", "position", "feature", "overlap", "dim"]
    over = over.set_index(["cliff", "feature"])
    assert over.loc[(1, "f0"), "overlap"] == pytest.approx(1) and over.loc[(2, "f3"), "overlap"] == pytest.approx(1)
    assert over.loc[(2, "f0"), ["step", "layer", "first", "position", "dim"]].tolist() == [4, "g", 3, 5, 1]
    # No rule given: entk.analyses.spectrum.find_cliffs, which sees the factor-10 gap after 3 only.
    from entk.analyses.spectrum import find_cliffs

    assert [c.position for c in find_cliffs(lam[0])] == [3]
    assert cliffs_table(eig)["position"].tolist() == [3]
    assert feature_overlap_table(eig, features)["position"].unique().tolist() == [3]


def test_feature_overlap_of_a_many_output_mean_kernel_is_not_lifted(tmp_path):
    # diag_mean of C = 3 outputs: D = N rows, features as they are (no class blocks).
    basis = centred_basis(N)
    eig = load_eigen(
        write_eigen(tmp_path / "x.npz", [0], {"g": (spectrum(8)[None], basis[None, :, :8], ["W"])}, n_outputs=3)
    )
    tab = feature_overlap_table(eig, basis[:, [1]], names=["f"], find_cliffs=ratio_cliffs).set_index("cliff")
    assert tab.loc[1, "dim"].tolist() == [1, 1] and tab.loc[1, "overlap"].tolist() == pytest.approx([1, 1])


@pytest.mark.parametrize(
    "features, match",
    [
        (np.linspace(0, 1, N), r"^1-D features must be non-negative integer labels \(one-hot encoded here\)$"),
        (np.arange(N) - 1, "1-D features must be non-negative integer labels"),
        (np.ones((N + 1, 2)), r"features must be \(N, F\) or labels \(N,\) with N = 30, got shape \(31, 2\)"),
        (np.ones((N, 2, 1)), r"got shape \(30, 2, 1\)"),
    ],
)
def test_bad_features_are_named(tmp_path, features, match):
    eig = load_eigen(
        write_eigen(tmp_path / "x.npz", [0], {"g": (spectrum(8)[None], centred_basis(N)[None, :, :8], ["W"])})
    )
    with pytest.raises(ValueError, match=match):
        feature_overlap_table(eig, features, find_cliffs=ratio_cliffs)
    with pytest.raises(ValueError, match="3 names for 2 features"):
        feature_overlap_table(eig, np.ones((N, 2)), names=["a", "b", "c"], find_cliffs=ratio_cliffs)


def test_localisation_of_groups_holding_exactly_k_and_its_columns(layered, tmp_path):
    tab = localisation_table(load_eigen(layered), k=8)  # l1 and l2 store 8 eigenvectors: exactly enough
    assert list(tab.columns) == ["step", "layer", "full", "k", "localisation"]
    assert sorted(set(tab["layer"])) == ["l1", "l2"] and set(tab["full"]) == {"full"}
    lam, vec = spectrum(4)[None], np.eye(N)[None, :, :4]
    path = write_eigen(tmp_path / "x.npz", [0], {"a": (lam, vec, ["W1"]), "b": (lam, vec, ["W2"])})
    assert list(localisation_table(load_eigen(path), k=2).columns) == ["step", "layer", "full", "k", "localisation"]


def test_the_callers_cliff_rule_sets_localisation_and_phase_k(layered):
    def after_two(values):
        return [SimpleNamespace(position=2, ratio=2.0, score=1.0)]

    eig = load_eigen(layered)
    assert set(localisation_table(eig, find_cliffs=after_two)["k"]) == {2}
    assert phase_k(eig, after_two) == {"full": 2, "l1": 2, "l2": 2}
    assert set(phase_table(eig, find_cliffs=after_two)["k"]) == {2}


def test_phase_k_reads_the_final_spectrum(tmp_path):
    # The cliff moves from after 3 to after 5 at the last checkpoint: k is the final one's.
    basis = centred_basis(N)
    lam = np.stack([spectrum(8, (3,)), spectrum(8, (3,)), spectrum(8, (5,))])
    eig = load_eigen(write_eigen(tmp_path / "x.npz", [0, 1, 2], {"g": (lam, np.stack([basis[:, :8]] * 3), ["W"])}))
    assert phase_k(eig, ratio_cliffs) == {"g": 5}


def test_phase_table_against_the_final_checkpoint_only(tmp_path):
    # A before 15, B after: the last checkpoint alone holds B.
    tab = phase_table(load_eigen(rotating_file(tmp_path, np.array([0, 10, 20]), switch=15)), k=4)
    np.testing.assert_allclose(tab.loc[tab.layer == "moving", "overlap_final"], [0, 0, 1], atol=1e-12)


def test_phase_table_k_per_group_and_at_its_limits(tmp_path):
    eig = load_eigen(rotating_file(tmp_path, np.arange(0, 50, 10), switch=20))
    assert set(phase_table(eig, k={"fixed": 4})["layer"]) == {"fixed"}  # groups not named are left out
    assert set(phase_table(eig, k={"moving": 3, "fixed": 5}).groupby("layer")["k"].first().items()) == {
        ("moving", 3),
        ("fixed", 5),
    }
    assert set(phase_table(eig, k=1)["k"]) == {1} and set(phase_table(eig, k=6)["k"]) == {6}  # 6 stored
    with pytest.raises(ValueError, match=r"^k = 0 for group 'moving' must lie in \[1, 6\]$"):
        phase_table(eig, k=0)


def test_spectrum_change_stays_finite_on_zero_eigenvalues(tmp_path):
    basis = centred_basis(N)
    lam = np.stack([np.r_[spectrum(4), 0.0, 0.0], np.r_[2 * spectrum(4), 0.0, 0.0]])
    eig = load_eigen(write_eigen(tmp_path / "x.npz", [0, 10], {"g": (lam, np.stack([basis[:, :6]] * 2), ["W"])}))
    change = phase_table(eig, k=6)["spectrum_change"].to_numpy()
    # Four eigenvalues double over 10 steps, two stay at zero (clipped to the smallest float): 4 ln 2 / 10 / 6.
    np.testing.assert_allclose(change, 4 * np.log(2) / 10 / 6)


def test_phase_peak_needs_at_least_min_change():
    table = pd.DataFrame(
        {"step": [0, 10, 20], "layer": "g", "overlap_final": [0.0, 0.025, 0.05], "d_overlap_final": [0.1, 0.3, 0.2]}
    )
    assert phase_peak(table, "g") == 10  # moves by exactly MIN_PHASE_CHANGE = 0.05: a transition
    assert phase_peak(table, "g", min_change=0.06) is None


def test_phase_table_columns_index_and_no_group(tmp_path):
    eig = load_eigen(rotating_file(tmp_path, np.arange(0, 50, 10), switch=20))
    columns = ["step", "layer", "k", "overlap_next", "overlap_final", "d_overlap_final", "spectrum_change"]
    tab = phase_table(eig, k=4)
    assert list(tab.columns) == columns and tab.index.tolist() == list(range(10))
    empty = phase_table(eig, k={})  # no group asked for (as when no final spectrum has a cliff)
    assert empty.empty and list(empty.columns) == columns


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("groups", np.array(["g", "g"]), r"key 'groups' must name at least one group, each once, got \['g', 'g'\]$"),
        ("groups", np.array([], dtype=str), r"key 'groups' must name at least one group, each once, got \[\]$"),
        ("inputs", np.zeros((N + 1, 1)), r"key 'inputs' has shape \(31, 1\) but n_samples is 30$"),
    ],
)
def test_load_eigen_checks_groups_and_inputs(tmp_path, key, value, match):
    path = write_eigen(tmp_path / "x.npz", [0], {"g": (spectrum(4)[None], np.eye(N)[None, :, :4], ["W"])})
    with np.load(path) as data:
        arrays = {**data, key: value}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_eigen(path)
