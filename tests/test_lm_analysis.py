"""The Table-3 analogue, best layers, claims and seed rows (docs/spec.md §4) on planted detector tables."""

import numpy as np
import pandas as pd
import pytest

from entk.analyses import lm_analysis
from entk.figures.lm_plots import detector_figure

CLASSES = ["A", "B"]


def planted(entk_ap, pca_ap, auroc_entk, auroc_pca):
    """A detector table with blocks 0, 1: per (method, block) the given test AP and AUROC for both classes."""
    rows = []
    for layer in (0, 1):
        for method, role, module, ap, au in (
            ("entk", "mlp_out", f"mlp_out.{layer}", entk_ap[layer], auroc_entk[layer]),
            ("pca", "hidden", f"hidden.{layer + 1}", pca_ap[layer], auroc_pca[layer]),
            ("random_hidden", "hidden", f"hidden.{layer + 1}", 0.5, 0.5),
        ):
            for c in CLASSES:
                rows.append(
                    {"method": method, "module": module, "role": role, "layer": layer, "class": c, "candidate": 0,
                     "sign": 1, "train_ap": ap, "test_ap": ap, "test_auroc": au, "test_precision_at_k": ap,
                     "chance": 0.5}
                )  # fmt: skip
    for c in CLASSES:
        rows.append(
            {**rows[0], "method": "random_entk", "module": "random", "role": "random", "layer": pd.NA, "class": c}
        )
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    return table


def test_best_layer_is_each_methods_highest_macro_auroc():
    table = planted([0.9, 0.6], [0.7, 0.8], [0.7, 0.9], [0.8, 0.6])
    assert lm_analysis.best_layers(table) == {"entk": 1, "pca": 0}


def test_table3_and_claims_follow_the_best_layers():
    trained = planted([0.9, 0.6], [0.7, 0.8], [0.7, 0.9], [0.8, 0.6])
    init = planted([0.55, 0.52], [0.6, 0.6], [0.6, 0.5], [0.6, 0.6])
    table = lm_analysis.table3(trained, init, CLASSES)
    best = table[table["layer"] == "best"].set_index("class")
    assert best.loc["macro", ["entk_ap", "pca_ap", "init_entk_ap"]].tolist() == pytest.approx([0.6, 0.7, 0.55])
    assert (best.loc["macro", "entk_layer"], best.loc["macro", "pca_layer"]) == (1, 0)
    lanczos = pd.DataFrame({"overlap": [0.5, 0.9, 1.0]})
    claims = pd.DataFrame(lm_analysis.lm_claims(table, lanczos, CLASSES)).set_index("claim")
    passed = claims["pass"].tolist()
    # AP: 0.6 < 0.7 fails; AUROC: 0.9 > 0.8 passes; every class 0.6 > chance 0.5; trained 0.6 > init 0.55.
    assert passed == [False, True, True, True, True]
    assert "min 0.500, median 0.900 over 3 modules" in claims["measured"].iloc[-1]


def test_seed_row_pairs_the_best_layers():
    row = lm_analysis.seed_row(planted([0.9, 0.6], [0.7, 0.8], [0.7, 0.9], [0.8, 0.6]), "s", 1)
    assert row["difference"] == pytest.approx(0.6 - 0.7)
    assert (row["entk_layer"], row["pca_layer"], row["draw"]) == (1, 0, 1)


def test_detector_table_finds_a_planted_class_direction():
    rng = np.random.default_rng(0)
    n, c = 40, 4
    labels = np.repeat([0, 1], n // 2)
    hidden = rng.standard_normal((2, n, c))
    hidden[1, :, 0] += 6 * labels  # block 0's output separates the classes along one axis
    planted_mode = np.zeros(n * c)
    planted_mode[2 * n : 3 * n] = labels - 0.5  # an eNTK mode concentrated on class B's contexts
    modes = {"mlp_out.0": {"vectors": np.column_stack([planted_mode, rng.standard_normal((n * c, 2))])}}
    modes["mlp_out.0"]["lanczos_vectors"] = modes["mlp_out.0"]["vectors"]
    settings = {"train_fraction": 0.5, "split_seed": 0, "top_k": 3, "random_directions": 3}
    table = lm_analysis.detector_table(labels, CLASSES, modes, hidden, settings)
    entk = table[(table["method"] == "entk") & (table["class"] == "B")].iloc[0]
    assert (entk["candidate"], entk["test_ap"]) == (0, 1.0)
    pca = table[(table["method"] == "pca") & (table["layer"] == 0)].set_index("class")
    assert pca["test_auroc"].tolist() == [1.0, 1.0]


def test_figure_draws_the_trained_models_values():
    trained = planted([0.9, 0.6], [0.7, 0.8], [0.7, 0.9], [0.8, 0.6])
    init = planted([0.55, 0.52], [0.1, 0.2], [0.6, 0.5], [0.6, 0.6])
    fig = detector_figure(trained, init, CLASSES)
    macro = fig.axes[len(CLASSES)]
    entk, pca, entk_init = (line.get_ydata().tolist() for line in macro.get_lines()[:3])
    assert entk == pytest.approx([0.9, 0.6]) and pca == pytest.approx([0.7, 0.8])
    assert entk_init == pytest.approx([0.55, 0.52])
