"""The workflow end to end on a tiny config, plus lint, formatting and dry runs of both profiles."""

import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import ROOT

TINY = {
    "seed": 0,
    "device": "cpu",
    "dtype": "float64",
    "tms": {
        "n_features": 8,
        "importance_base": 0.8,
        "n_points": 40,
        "steps": 200,
        "lr": 0.01,
        "betas": [1.0, 0.3],
        "top_k": 12,
        "models": {"a": {"m": 3, "sparsity": 0.3}, "b": {"m": 3, "sparsity": 0.9}},
        "layers": {"full": "all", "W": ["W"]},
    },
    # p = 13 end to end: every figure and the claims are computed for another modulus.
    "mlp": {
        "p": 13,
        "hidden": 64,
        "train_fraction": 0.7,
        "epochs": 60,
        "lr": 0.05,
        "weight_decay": 0.01,
        "checkpoint_every": 20,
        "top_k": 60,
        "layers": {"layer1": ["fc1"], "layer2": ["fc2"]},
        "fig3_epochs": [0, 20, 60],
        "fig5_epochs": [40, 60],
        "grok_threshold": 0.5,
    },
    "scale": yaml.safe_load((ROOT / "config.yaml").read_text())["scale"],
    "claims": yaml.safe_load((ROOT / "config.yaml").read_text())["claims"],
}
FIGURES = ["fig1_tms", "fig2_spectra", "fig3_grokking", "fig4_rotation", "fig5_sumdiff", "fig_overlap"]


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
    metrics = pd.read_csv(tiny_run / "results" / "tms" / "metrics.csv")
    assert len(metrics) == 2 * 2 * 2  # models × layers × β
    assert metrics["cliff"].between(1, 11).all()
    assert set(metrics.columns) >= {"recovered_features", "matched_overlap", "represented_features"}
    assert not list((tiny_run / "results").rglob(".*.npz"))  # no half-written temporaries
    claims = pd.read_csv(tiny_run / "results" / "claims.csv")
    assert list(claims.columns) == ["claim", "expected", "measured", "pass"]
    assert claims["claim"].str.contains("cliff 1 size").any() and len(claims) >= 12
    assert "= 2(p−1) = 24" in claims["expected"].iloc[0]  # cliff sizes follow p = 13
    overlap = pd.read_csv(tiny_run / "results" / "mlp" / "overlap.csv")
    assert overlap["epoch"].tolist() == [0, 20, 40, 60]
    assert overlap[["overlap_sum", "overlap_diff"]].le(12 + 1e-9).all().all()


@pytest.mark.slow
def test_rerun_does_nothing(tiny_run):
    out = snakemake(tiny_run, "--cores", "2")
    assert "Nothing to be done" in out


@pytest.mark.slow
def test_html_report(tiny_run):
    snakemake(tiny_run, "--report", str(tiny_run / "report.html"))
    assert (tiny_run / "report.html").stat().st_size > 100_000


@pytest.mark.slow
def test_changing_one_sparsity_reruns_only_that_chain(tiny_run):
    changed = yaml.safe_load(yaml.safe_dump(TINY))
    changed["tms"]["models"]["b"]["sparsity"] = 0.5
    (tiny_run / "config_b.yaml").write_text(yaml.safe_dump(changed))
    out = snakemake(tiny_run, "-n", "--configfile", str(tiny_run / "config_b.yaml"))
    rules = re.findall(r"^rule (\w+):", out, re.M)
    wildcards = re.findall(r"wildcards: (.*)", out)
    assert set(rules) == {"train_tms", "kernel_tms", "eigen_tms", "tms_summary", "figure_1", "claims", "all"}
    assert wildcards and all("model=b" in w for w in wildcards)
    assert rules.count("eigen_tms") == 4 and rules.count("train_tms") == 1


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
    assert "figure_1" in out and "train_tms" in out


@pytest.mark.slow
def test_same_seed_gives_identical_results(tiny_run, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    snakemake(tmp_path, "--cores", "2")
    for table in ("claims.csv", "tms/metrics.csv", "mlp/overlap.csv", "mlp/history.csv"):
        assert (tmp_path / "results" / table).read_bytes() == (tiny_run / "results" / table).read_bytes(), table
