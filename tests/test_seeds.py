"""Seeds as an axis of every experiment: the config's seeds expansion, the seed table, and a tiny
seed study end to end against single-seed entries with the same seeds."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from entk.analyses.seeds import leading_number, seed_table, with_seed_column
from entk.pipeline.config import semantic_errors
from entk.pipeline.experiments import resolve_experiments

TMS = {"kind": "tms", "settings": {"n_features": 8, "m": 3, "sparsity": 0.3, "n_points": 40, "steps": 200}}


def _config(**experiments) -> dict:
    return {"seed": 7, "experiments": experiments}


def test_seeds_expand_into_one_unit_per_seed():
    experiments, errors = resolve_experiments(
        _config(a={**TMS, "seeds": [3, 1]}, b={**TMS, "seed": 1, "seed_key": "a"}, c=TMS), "."
    )
    assert errors == []
    assert sorted(experiments) == ["a/seed1", "a/seed3", "b", "c"]
    assert [experiments[e].seed for e in ("a/seed1", "a/seed3", "b", "c")] == [1, 3, 1, 7]
    assert experiments["a/seed1"].seed_key == experiments["a/seed3"].seed_key == "a"
    # A seed's unit is the single-seed entry with that seed and seed_key, but for its id.
    assert experiments["a/seed1"].params() == {**experiments["b"].params(), "id": "a/seed1"}
    assert experiments["c"].seed_key == "c"


def test_seed_and_seeds_together_and_bad_seed_study_are_named():
    _, errors = resolve_experiments(_config(a={**TMS, "seed": 1, "seeds": [0, 1]}), ".")
    assert len(errors) == 1 and "experiments.a" in errors[0] and "not both" in errors[0]
    config = _config(a=TMS, a_s={**TMS, "seeds": [0, 1]}, b=TMS, b_s={**TMS, "seeds": [0, 2]}, c=TMS)
    config["paper"] = {"seeds": {"experiments": {"a": "a_s", "b": "b_s", "c": "c", "d": "a_s"}}}
    _, errors = semantic_errors(config)
    text = "\n".join(errors)
    assert "'paper.seeds.experiments.c'" in text and "lists no seeds" in text
    assert "'paper.seeds.experiments.d'" in text and "'d' is not under experiments" in text
    assert "different seeds" in text and "[0, 2]" in text
    config["paper"] = {"tms": {"experiments": ["a_s"], "spectrum_view": "main", "heatmap_views": ["main"]}}
    _, errors = semantic_errors(config)
    assert any("'paper.tms.experiments'" in e and "lists seeds" in e and "paper.seeds" in e for e in errors)


def _claims(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["claim", "expected", "measured", "pass"])


def test_seed_table_counts_each_claim_over_seeds():
    same, other = ("keys", "same", "W_E [1], W_U [1]", True), ("keys", "same", "W_E [2], W_U [3]", False)
    tables = {
        0: _claims(("gap", "≥ 2", "3.5", True), same, ("peak", "in", "-40 (a)", True)),
        1: _claims(("gap", "≥ 2", "1.5", False), other),
        2: _claims(("gap", "≥ 2", "2.5", True), same, ("peak", "in", "+60 (b)", True)),
    }
    table = seed_table(tables).set_index("claim")
    assert list(table.index) == ["gap", "keys", "peak"]
    assert table.loc["gap", ["seed 0", "seed 1", "seed 2"]].tolist() == ["3.5", "1.5", "2.5"]
    assert table.loc["gap", "passing"] == 2 and table.loc["gap", "seeds"] == 3 and table.loc["gap", "failing"] == "1"
    assert (table.loc["gap", "median"], table.loc["gap", "min"], table.loc["gap", "max"]) == (2.5, 1.5, 3.5)
    assert np.isnan(table.loc["keys", "median"])  # not a number at any seed
    # A row a seed's table lacks is not measured there, and does not pass there.
    assert table.loc["peak", "seed 1"] == "—" and table.loc["peak", "passing"] == 2
    assert (table.loc["peak", "min"], table.loc["peak", "max"]) == (-40, 60)
    with pytest.raises(ValueError, match="one per seed"):
        seed_table({})


def test_leading_number_and_seed_column():
    assert leading_number("0.9912 (3.965 of 4, modes 1–5)") == pytest.approx(0.9912)
    assert leading_number("-40 (peak 1560, grok 1600)") == -40
    assert leading_number("42") == 42 and leading_number("1e-3") == 1e-3
    assert np.isnan(leading_number("no transition")) and np.isnan(leading_number("12abc"))
    stacked = with_seed_column([_claims(("a", "", "1", True)), _claims(("b", "", "2", False))], ["2", "0 1"])
    assert stacked["seed"].tolist() == ["2", "0 1"] and list(stacked.columns)[-1] == "seed"


TINY = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())


def _tiny_seed_study(single_seed: int) -> dict:
    """TMS model a and the Transformer of .test/config.yaml over seeds [0, 1] (a_seeds, t_seeds), and
    single-seed entries with the same seed_key at ``single_seed`` (a_single, t_single) as the paper's runs.
    Model a keeps one heatmap view (β = 1) of two: a second one adds eigen jobs, not another kind of
    claim row to carry through the seed table."""
    a, t = dict(TINY["experiments"]["a"]), TINY["experiments"]["transformer"]
    a["views"] = {v: a["views"][v] for v in ("plain", "beta1")}
    return {
        **{k: v for k, v in TINY.items() if k not in ("experiments", "paper", "claims")},
        "experiments": {
            "a_seeds": {**a, "seeds": [0, 1]},
            "a_single": {**a, "seed": single_seed, "seed_key": "a_seeds"},
            "t_seeds": {**t, "seeds": [0, 1]},
            "t_single": {**t, "seed": single_seed, "seed_key": "t_seeds"},
        },
        "paper": {
            "tms": {**TINY["paper"]["tms"], "experiments": ["a_single"], "heatmap_views": ["beta1"]},
            "transformer": {**TINY["paper"]["transformer"], "experiment": "t_single"},
            "seeds": {"experiments": {"a_single": "a_seeds", "t_single": "t_seeds"}},
        },
        "claims": {**TINY["claims"], "tms_represented": {"a_single": 3}},
    }


def _snakemake(workdir, *targets) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2"]
        + list(targets),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout + run.stderr


@pytest.mark.slow
def test_tiny_seed_study_end_to_end(tmp_path):
    """Each seed's column of the seed table is what the single-seed entries with that seed measure, row
    for row: the study at seeds [0, 1] against the paper's claims of single-seed runs at 1, then at 0."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_tiny_seed_study(1)))
    assert "Claims over seeds" in _snakemake(tmp_path, "seeds", "results/claims.csv")
    results = tmp_path / "results"
    for unit in ("a_seeds/seed0", "a_seeds/seed1", "t_seeds/seed0", "t_seeds/seed1"):
        assert (results / unit / "checkpoints.pt").exists(), unit
    table = pd.read_csv(results / "paper" / "seed_claims.csv", dtype=str).set_index("claim")
    assert [c for c in table.columns if c.startswith("seed ")] == ["seed 0", "seed 1"]
    assert len(table) >= 10 and not table[["seed 0", "seed 1"]].isin(["—"]).any().any()
    assert (results / "figures" / "fig_seeds.png").stat().st_size > 10_000
    measured = {}
    for seed in (1, 0):
        if seed == 0:
            (tmp_path / "config.yaml").write_text(yaml.safe_dump(_tiny_seed_study(0)))
            _snakemake(tmp_path, "results/claims.csv")
        claims = pd.read_csv(results / "claims.csv", dtype=str)
        assert set(claims["seed"]) == {str(seed)}
        measured[seed] = claims.set_index("claim")["measured"].to_dict()
        assert measured[seed] == table[f"seed {seed}"].to_dict(), seed
    assert measured[0] != measured[1]  # another seed, another model
    # Seed 0's unit is the single entry at seed 0, bit for bit: its eigenpairs and its training history.
    with np.load(results / "a_seeds" / "seed0" / "plain" / "eigen.npz") as x:
        with np.load(results / "a_single" / "plain" / "eigen.npz") as y:
            assert sorted(x.files) == sorted(y.files)
            for key in x.files:
                assert np.array_equal(x[key], y[key]), key
    history = [(results / unit / "history.csv").read_bytes() for unit in ("t_seeds/seed0", "t_single")]
    assert history[0] == history[1]


def test_seed_figure_marks_each_seeds_epochs_and_aligns_the_curves():
    from entk.figures.seed_plots import fig_seeds

    epochs = np.arange(0, 220, 20)
    histories = {
        0: pd.DataFrame({"epoch": epochs, "test_acc": np.select([epochs >= 140, epochs >= 100], [0.97, 0.6], 0.1)}),
        1: pd.DataFrame({"epoch": epochs, "test_acc": np.full(len(epochs), 0.2)}),
    }
    curves = {s: pd.DataFrame({"epoch": epochs, "overlap": epochs / 50, "of": 4}) for s in histories}
    fig = fig_seeds(histories, curves, 0.5, author={2: 1600})
    left, right = fig.axes
    points = {(line.get_xdata()[0], line.get_ydata()[0], line.get_fillstyle()) for line in left.get_lines()}
    # Seed 0: 50 % at 100, 95 % at 140; seed 1 never (open markers at its last epoch); the author's seed 2.
    assert points == {(0, 100, "full"), (0, 140, "full"), (1, 200, "none"), (2, 1600, "full")}
    aligned = [line for line in right.get_lines() if line.get_label().startswith("seed")]
    assert len(aligned) == 1 and aligned[0].get_xdata()[0] == -100  # seed 0's curve, grokking at 0
    with pytest.raises(ValueError, match="no seeds"):
        fig_seeds({}, {})
