"""The paper's claims hold for the default seed: the whole workflow at the shipped config."""

import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT
from entk.claims import format_scorecard

# Claims that fail at the default seed, as measured and reported in results/claims.csv: the seed-0
# Transformer memorises its training set but does not grok within the paper's 4000 epochs (test
# accuracy 17 % at 2000, 45 % at 4000; the author's seed reached 95 % at 1600), so its W_U modes do
# not reach the sum and axis-sum families and there is no grokking epoch to compare peaks with.
KNOWN_FAILING_AT_SEED_0 = (
    "best test accuracy by epoch 2000",
    "W_U eNTK modes 1–9 vs the sum family",
    "W_U eNTK modes 10–17 vs the axis_sum family",
    "W_U top-9 sum-overlap derivative peak vs grokking",
    "label-free phase detector peak (W_U eNTK) vs grokking",
)


@pytest.mark.slow
def test_every_claim_holds_with_the_default_config(tmp_path):
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    claims = pd.read_csv(tmp_path / "results" / "claims.csv")
    assert len(claims) >= 31
    known = claims["claim"].str.startswith(KNOWN_FAILING_AT_SEED_0)
    assert known.sum() == len(KNOWN_FAILING_AT_SEED_0), format_scorecard(claims)
    assert claims.loc[~known, "pass"].all(), format_scorecard(claims)
