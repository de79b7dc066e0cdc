"""The language-model part of the workflow end to end on a tiny model (.test/lm.yaml): Hugging Face
checkpoints, contexts, one eigen job per module and state, detector tables, the Table-3 analogue,
its figure, claims rows and the seed table."""

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from entk import lm
from test_workflow import snakemake

CONFIG = yaml.safe_load((ROOT / ".test" / "lm.yaml").read_text())


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lm")
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    out = snakemake(workdir, "--cores", "2", "all", "results/paper/lm_seed_table.csv")
    assert "claims pass" in out
    return workdir / "results"


@pytest.mark.slow
def test_lm_workflow_builds_every_output(lm_run):
    model = lm.load_causal_lm(lm_run / "stories" / "hf" / "step_200")
    assert lm.module_roles(model)["mlp_out"] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    with np.load(lm_run / "stories" / "lm" / "d0" / "contexts.npz") as data:
        assert data["ids"].shape == (30, 8) and np.bincount(data["labels"]).tolist() == [6] * 5
    modules = ["mlp_out.0", "mlp_out.1", "attn_out.0", "attn_out.1", "embedding.0"]
    for state in ("trained", "init"):
        base = lm_run / "stories" / "lm" / "d0" / state
        for m in modules:
            with np.load(base / "eigen" / f"{m}.npz") as data:
                assert data["vectors"].shape == (30 * 16, 5) and data["lanczos_values"].shape == (5,)
        table = pd.read_csv(base / "detectors.csv")
        assert set(table["method"]) == {"entk", "entk_lanczos", "pca", "random_entk", "random_hidden"}
        assert len(table) == 5 * (2 * len(modules) + 1 + 2 * 3)
        assert table[["test_ap", "test_auroc", "test_precision_at_k"]].stack().between(0, 1).all()
        assert set(pd.read_csv(base / "lanczos.csv")["module"]) == set(modules)
    table3 = pd.read_csv(lm_run / "paper" / "lm_table3.csv")
    assert list(table3["layer"].unique()) == ["0", "1", "best"]
    assert len(table3) == 3 * 6
    claims = pd.read_csv(lm_run / "claims.csv")
    assert claims["claim"].str.startswith("LM:").sum() == 5
    seeds = pd.read_csv(lm_run / "paper" / "lm_seed_table.csv")
    assert seeds["draw"].tolist() == [0]
    assert seeds["difference"].to_numpy() == pytest.approx((seeds["entk_macro_ap"] - seeds["pca_macro_ap"]).to_numpy())
    for ext in ("png", "pdf"):
        assert (lm_run / "figures" / f"fig_lm_detectors.{ext}").stat().st_size > 10_000
    assert not list(lm_run.rglob(".*.*"))  # no half-written temporaries
    # Each state's eigen jobs read the Jacobians one chain stored, which are removed once they are done.
    logs = lm_run.parent / "logs" / "stories" / "lm" / "d0"
    assert all("D̃ stored ahead" in log.read_text() for log in logs.glob("*/eigen/*.log"))
    assert len(list(logs.glob("*/eigen/*.log"))) == 2 * len(modules)
    assert not list(lm_run.rglob("jacobians"))


@pytest.mark.slow
def test_lm_rerun_does_nothing(lm_run):
    out = snakemake(lm_run.parent, "--cores", "2", "all", "results/paper/lm_seed_table.csv")
    assert "Nothing to be done" in out
