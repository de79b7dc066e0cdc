"""The workflow end to end on a tiny config, plus lint, formatting and dry runs of both profiles."""

import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import ROOT

# The catalog's convention: small instances of every kind in .test/config.yaml, run end to end here.
TINY = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
FIGURES = [
    "fig1_tms",
    "fig2_spectra",
    "fig3_grokking",
    "fig4_rotation",
    "fig5_sumdiff",
    "fig_overlap",
    "fig_transformer",
    "fig_transformer_layers",
]
GENERIC = [
    "eigen.npz",
    "spectra.csv",
    "cliffs.csv",
    "localisation.csv",
    "phases.csv",
    "features.csv",
    "fig_spectra.png",
    "fig_checkpoints.png",
    "fig_phases.png",
]


def snakemake(workdir, *args, check=True):
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if check and run.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run.stdout + run.stderr


def planned_jobs(output: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of each job a dry run plans."""
    return set(re.findall(r"rule (\w+):.*?(?:wildcards: ([^\n]*))?\n\s*(?:resources|jobid)", output, re.S))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    out = snakemake(workdir, "--cores", "2")
    assert "Claims scorecard" in out and "claims pass" in out  # printed at the end of the run
    return workdir


@pytest.mark.slow
def test_tiny_workflow_builds_every_target(tiny_run):
    for fig in FIGURES:
        for ext in ("png", "pdf"):
            assert (tiny_run / "results" / "figures" / f"{fig}.{ext}").stat().st_size > 10_000
    for exp, entry in TINY["experiments"].items():
        for view in entry["views"]:
            for name in GENERIC:
                assert (tiny_run / "results" / exp / view / name).exists(), (exp, view, name)
    metrics = pd.read_csv(tiny_run / "results" / "paper" / "tms_metrics.csv")
    assert len(metrics) == 2 * 2  # models × β views
    assert set(metrics.columns) >= {"gap_ratio_n", "cliffs", "recovered_features", "represented_features"}
    assert not list((tiny_run / "results").rglob(".*.*"))  # no half-written temporaries
    claims = pd.read_csv(tiny_run / "results" / "claims.csv")
    assert list(claims.columns) == ["claim", "expected", "measured", "pass", "seed"]
    assert claims["claim"].str.contains("cliff 1 size").any() and len(claims) >= 13
    assert "= 2(p−1) = 24" in claims["expected"].iloc[0]  # cliff sizes follow p = 13
    overlap = pd.read_csv(tiny_run / "results" / "paper" / "overlap_curve.csv")
    assert overlap["epoch"].tolist() == [0, 20, 40, 60]
    assert overlap[["overlap_sum", "overlap_diff"]].le(12 + 1e-9).all().all()
    spectra = pd.read_csv(tiny_run / "results" / "spectra.csv")
    assert list(spectra.columns) == ["experiment", "view", "step", "layer", "index", "eigenvalue"]
    assert set(spectra["experiment"]) == set(TINY["experiments"])
    assert claims["claim"].str.contains("key frequencies").any()  # the Transformer's claims are computed
    keys = pd.read_csv(tiny_run / "results" / "paper" / "transformer_keys.csv")
    assert len(keys) == 2
    phases = pd.read_csv(tiny_run / "results" / "mlp" / "diag" / "phases.csv")
    assert phases["step"].unique().tolist() == [0, 20, 40, 60] and phases["peak"].sum() <= 3


@pytest.mark.slow
def test_rerun_does_nothing(tiny_run):
    out = snakemake(tiny_run, "--cores", "2")
    assert "Nothing to be done" in out


@pytest.mark.slow
def test_html_report(tiny_run):
    snakemake(tiny_run, "--report", str(tiny_run / "report.html"))
    html = (tiny_run / "report.html").read_text()
    # Every figure and the claims table are in the report, each under its caption.
    for name in [*(f"{fig}.png" for fig in FIGURES), "claims.csv"]:
        assert name in html, name
    assert "Claims scorecard." in html


@pytest.mark.slow
def test_changing_one_sparsity_reruns_only_that_chain(tiny_run):
    changed = yaml.safe_load(yaml.safe_dump(TINY))
    changed["experiments"]["b"]["settings"]["sparsity"] = 0.5
    (tiny_run / "config_b.yaml").write_text(yaml.safe_dump(changed))
    out = snakemake(tiny_run, "-n", "--configfile", str(tiny_run / "config_b.yaml"))
    rules = re.findall(r"^rule (\w+):", out, re.M)
    wildcards = re.findall(r"wildcards: (.*)", out)
    assert set(rules) == {"train", "eigen", "analyse", "claims_tms", "figure_1", "claims", "spectra_table", "all"}
    # The paper's claims rules are keyed by their run (the default run is "paper"), the rest by experiment b.
    assert wildcards and all("experiment=b" in w or w == "run=paper" for w in wildcards), wildcards
    assert rules.count("eigen") == 4 and rules.count("train") == 1  # views plain, beta1, beta0.3, W


def test_lint_is_clean():
    run = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Lints for" not in run.stdout + run.stderr


def test_snakefmt_clean():
    files = [str(ROOT / "Snakefile"), *map(str, sorted((ROOT / "rules").glob("*.smk")))]
    run = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_dry_run_with_profile(profile, tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    out = snakemake(tmp_path, "-n", "--profile", str(ROOT / "profiles" / profile))
    assert "figure_1" in out and "rule train:" in out


def test_default_and_seeds_targets_build_the_language_model(tmp_path):
    """The paper's language model (docs/spec.md §4) is in the default target (every module of the
    trained model, the MLP down-projections of the initial one, its claims and figure) and its seed
    table in the seeds target (the other training seeds' MLP down-projections only, the trained model)."""
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())

    def lm_jobs(*target):
        out = snakemake(tmp_path, "-n", *target)
        rules = re.findall(r"^rule (\w+):", out, re.M)
        return rules, re.findall(r"output: results/(stories\S*)/lm/d\d/(\w+)/eigen/(\S+)\.npz", out)

    rules, eigen = lm_jobs()
    assert len(eigen) == 10 and {"claims_lm", "figure_lm"} <= set(rules)
    # One chain of reverse passes per state gives its modules' stored Jacobians.
    assert rules.count("lm_jacobians") == 2
    assert sorted(m for _, state, m in eigen if state == "init") == ["mlp_out.0", "mlp_out.1", "mlp_out.2"]
    rules, eigen = lm_jobs("seeds")
    others = [e for e in eigen if e[0] != "stories"]
    assert "lm_seed_table" in rules and len(others) == 12
    assert all(state == "trained" and module.startswith("mlp_out") for _, state, module in others), others


@pytest.mark.parametrize("target", ["scale"])
def test_dry_run_of_optional_targets(target, tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    out = snakemake(tmp_path, "-n", target)
    assert "claims_scale" in out and "experiment=mlp_p113" in out


# What a second run with the same seed must reproduce byte for byte; that run builds only these (and
# what they need: every training, the eigenpairs behind the claims), not the other figures and views.
SAME_SEED_FILES = (
    "claims.csv",
    "paper/tms_metrics.csv",
    "paper/overlap_curve.csv",
    "mlp/history.csv",
    "mlp/checkpoints.pt",
    "mlp/diag/eigen.npz",
    "figures/fig1_tms.pdf",
    "figures/fig1_tms.png",
)


@pytest.mark.slow
def test_same_seed_gives_identical_results(tiny_run, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    snakemake(tmp_path, "--cores", "2", *(f"results/{name}" for name in SAME_SEED_FILES))
    for table in SAME_SEED_FILES:
        assert (tmp_path / "results" / table).read_bytes() == (tiny_run / "results" / table).read_bytes(), table
