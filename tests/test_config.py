"""Config validation: each kind of bad config gets one clear message that names the key."""

import copy
import subprocess
import sys

import pytest
import yaml

from entk.config import ConfigError, check_config

from conftest import ROOT

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
    (("tms", "step"), 10, r"unknown config key 'step' under 'tms'"),
    (("tms", "steps"), "many", r"'tms.steps': 'many' is not of type 'integer'"),
    (("tms", "models", "m10_S0.3", "sparsity"), 1.5, r"'tms.models.m10_S0.3.sparsity': 1.5 is greater than the maximum of 1"),
    (("tms", "models", "m10_S0.9", "sparsity"), -0.1, r"'tms.models.m10_S0.9.sparsity': -0.1 is less than the minimum of 0"),
    (("tms", "n_points"), -5, r"'tms.n_points': -5 is less than the minimum of 2"),
    (("tms", "betas"), [], r"'tms.betas': \[\] should be non-empty"),
    (("tms", "top_k"), 0, r"'tms.top_k': 0 is less than the minimum of 2"),
    (("device",), "gpu", r"'device': 'gpu' is not one of \['auto', 'cpu', 'cuda'\]"),
    (("dtype",), "float16", r"'dtype': 'float16' is not one of"),
    (("tms", "layers", "full"), "some", r"'tms.layers.full': 'some' must be the string 'all' or a non-empty list"),
    (("tms", "lr"), DELETE, r"'tms' is missing 'lr'"),
    (("tms", "models", "m40_S0.9", "m"), 2.5, r"'tms.models.m40_S0.9.m': 2.5 is not of type 'integer'"),
    (("tms", "models", "m40_S0.9", "width"), 3, r"unknown config key 'width' under 'tms.models.m40_S0.9'"),
    (("seed",), True, r"'seed': True is not of type 'integer'"),
    (("mlp", "fig5_epochs"), [40, 45], r"'mlp.fig5_epochs': epochs \[45\] have no checkpoint"),
    (("mlp", "top_k"), 100, r"'mlp.top_k': 100 must lie in \[4\(p−1\)\+2, p²\] = \[114, 841\]"),
    (("mlp", "epochs"), 505, r"'mlp.checkpoint_every': 10 does not divide mlp.epochs = 505"),
    (("tms", "top_k"), 30000, r"'tms.top_k': 30000 exceeds the kernel's dimension"),
    (("claims", "grok_epoch"), [110, 70], r"'claims.grok_epoch': \[110, 70\] is not an interval"),
    (("mlp", "layers", "layer3"), ["fc1"], r"unknown config key 'layer3' under 'mlp.layers'"),
    (("scale", "top_k"), 200, r"'scale.top_k': 200 must lie in \[4\(p−1\)\+2, p²\] = \[450, 12769\]"),
]


def test_shipped_config_is_valid(config):
    check_config(config, SCHEMA)


@pytest.mark.parametrize("path,value,message", BAD, ids=[".".join(b[0]) for b in BAD])
def test_bad_config_is_named(config, path, value, message):
    bad = copy.deepcopy(config)
    set_key(bad, path, value)
    with pytest.raises(ConfigError, match=message) as err:
        check_config(bad, SCHEMA)
    assert str(err.value).count("\n  - ") == 1, "exactly one problem expected"


def test_model_id_must_be_a_file_name(config):
    config["tms"]["models"]["a/b"] = {"m": 3, "sparsity": 0.5}
    with pytest.raises(ConfigError, match=r"name 'a/b' may only use"):
        check_config(config, SCHEMA)


def test_snakemake_refuses_bad_config_at_parse_time(config, tmp_path):
    config["tms"]["models"]["m10_S0.3"]["sparsity"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "tms.models.m10_S0.3.sparsity': 2 is greater than the maximum of 1" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()
