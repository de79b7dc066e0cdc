"""The paper's claims hold with the shipped config: the whole workflow, the Transformer replaying the
published run (the author's draws at seed 2)."""

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from entk.analyses.claims import format_scorecard

# Rows of the replayed seed-2 Transformer that fail as measured (docs/spec.md §3), reported as they
# are; both are this repository's additions, with no counterpart in the author's notebook. The W_U
# eNTK route finds frequencies [1, 2, 5, 12] where W_E's power finds the paper's [1, 12] (2 and 5 from
# modes 12–16), and the label-free detector finds no cliff in the final W_U spectrum (its drops after
# modes 5 and 9 score 1.9 and 4.9 against min_score 8, with 16 eigenvalues or the notebook's 40), so
# it has no k to follow. Every other row must pass; a row leaving or joining this list fails the test.
FAILING_AS_MEASURED = (
    "key frequencies: W_E Fourier power = top W_U eNTK modes",
    "label-free phase detector peak (W_U eNTK)",
)


@pytest.mark.slow
def test_every_claim_holds_with_the_default_config(tmp_path):
    # The language model's part of the default target (≈ 5 min on 2 cores: 14 eigen jobs at N = 1024) is
    # left to ./run.sh paper, whose claims rows benchmarks/RESULTS.md records, to keep the suite in its
    # 15 minutes; tests/test_lm_workflow.py runs the same rules end to end on .test/lm.yaml.
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["experiments"][config["paper"]["lm"]["experiment"]]["default"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    claims = pd.read_csv(tmp_path / "results" / "claims.csv", dtype={"seed": str})
    assert len(claims) >= 31
    known = claims["claim"].str.startswith(FAILING_AS_MEASURED)
    assert known.sum() == len(FAILING_AS_MEASURED), format_scorecard(claims)
    assert claims.loc[~known, "pass"].all() and not claims.loc[known, "pass"].any(), format_scorecard(claims)
    # The scorecard says each row's seed: the Transformer's rows come from the replayed seed 2.
    transformer = claims["claim"].str.contains("W_U|key frequencies|test accuracy")
    assert set(claims.loc[transformer, "seed"]) == {"2"} and set(claims.loc[~transformer, "seed"]) == {"0"}
