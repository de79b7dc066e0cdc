"""Config validation: each kind of bad config gets one clear message that names the key."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from entk.pipeline.config import ConfigError, check_config

SCHEMA = ROOT / "schemas" / "config.schema.yaml"


def set_key(cfg, path, value):
    *parents, last = path
    for p in parents:
        cfg = cfg[p]
    if value is DELETE:
        del cfg[last]
    else:
        cfg[last] = value


DELETE = object()
BAD = [
    (("sed",), 1, r"unknown config key 'sed'"),
    (("experiments", "mlp", "step"), 10, r"unknown config key 'step' under 'experiments.mlp'"),
    (
        ("experiments", "mlp", "settings", "epochs"),
        "many",
        r"'experiments.mlp.settings.epochs': 'many' is not of type 'integer'",
    ),
    (
        ("experiments", "m10_S0.3", "settings", "sparsity"),
        1.5,
        r"'experiments.m10_S0.3.settings.sparsity': 1.5 is greater than or equal to the maximum of 1",
    ),
    (
        ("experiments", "m10_S0.9", "settings", "sparsity"),
        -0.1,
        r"'experiments.m10_S0.9.settings.sparsity': -0.1 is less than the minimum of 0",
    ),
    (
        ("experiments", "m10_S0.3", "settings", "n_points"),
        -5,
        r"'experiments.m10_S0.3.settings.n_points': -5 is less than the minimum of 2",
    ),
    (
        ("experiments", "m10_S0.3", "views", "plain", "top_k"),
        0,
        r"'experiments.m10_S0.3.views.plain.top_k': 0 is less than the minimum of 1",
    ),
    (("device",), "gpu", r"'device': 'gpu' is not one of \['auto', 'cpu', 'cuda'\]"),
    (("dtype",), "float16", r"'dtype': 'float16' is not one of"),
    (
        ("experiments", "mlp", "views", "diag", "layers", "full"),
        "some",
        r"'experiments.mlp.views.diag.layers': .* is not valid here",
    ),
    (("experiments", "mlp", "kind"), DELETE, r"'experiments.mlp': give exactly one of kind"),
    (
        ("experiments", "m40_S0.9", "settings", "m"),
        2.5,
        r"'experiments.m40_S0.9.settings.m': 2.5 is not of type 'integer'",
    ),
    (
        ("experiments", "m40_S0.9", "settings", "width"),
        3,
        r"unknown config key 'width' under 'experiments.m40_S0.9.settings'",
    ),
    (("seed",), True, r"'seed': True is not of type 'integer'"),
    (
        ("paper", "modadd", "fig5_epochs"),
        [40, 45],
        r"'paper.modadd.fig5_epochs': epochs \[45\] have no analysed checkpoint",
    ),
    (
        ("experiments", "mlp", "views", "diag", "top_k"),
        100,
        r"'experiments.mlp.views.diag.top_k': 100 must lie in \[4\(p−1\)\+2, p²\] = \[114, 841\]",
    ),
    (
        ("experiments", "m10_S0.3", "views", "plain", "top_k"),
        30000,
        r"'experiments.m10_S0.3.views.plain.top_k': 30000 exceeds the kernel's dimension",
    ),
    (("claims", "grok_epoch"), [110, 70], r"'claims.grok_epoch': \[110, 70\] is not an interval"),
    (
        ("paper", "tms", "spectrum_view"),
        "raw",
        r"'paper.tms.experiments': experiment 'm10_S0.3' has no view\(s\) \['raw'\]",
    ),
    (
        ("experiments", "mlp_p113", "views", "diag", "top_k"),
        200,
        r"'experiments.mlp_p113.views.diag.top_k': 200 must lie in \[4\(p−1\)\+2, p²\] = \[450, 12769\]",
    ),
]


def test_shipped_config_is_valid(config):
    check_config(config, SCHEMA, str(ROOT))


@pytest.mark.parametrize("path,value,message", BAD, ids=[".".join(b[0]) for b in BAD])
def test_bad_config_is_named(config, path, value, message):
    bad = json.loads(json.dumps(config))  # config.yaml's anchors share views: unshare them
    set_key(bad, path, value)
    with pytest.raises(ConfigError, match=message) as err:
        check_config(bad, SCHEMA, str(ROOT))
    # A view shared by all TMS models (a YAML anchor) is named once per model.
    assert str(err.value).count("\n  - ") == (3 if path[-1] == "spectrum_view" else 1), "one problem expected"


def test_experiment_id_must_be_a_file_name(config):
    config["experiments"]["a/b"] = {"kind": "tms"}
    with pytest.raises(ConfigError, match=r"name 'a/b' may only use"):
        check_config(config, SCHEMA, str(ROOT))


def test_snakemake_refuses_bad_config_at_parse_time(config, tmp_path):
    config["experiments"]["m10_S0.3"]["settings"]["sparsity"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert (
        "experiments.m10_S0.3.settings.sparsity': 2 is greater than or equal to the maximum of 1"
        in run.stdout + run.stderr
    )
    assert not (tmp_path / "results").exists()
