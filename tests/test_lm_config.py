"""The language_models section: each bad entry gets one message naming its key and the fix, at
parse time (docs/spec.md §4, "Bad input")."""

import copy

import pytest
import yaml

from conftest import ROOT
from entk.kinds.registry import get_kind
from entk.pipeline.config import ConfigError, check_config
from entk.pipeline.lm_config import expand_modules

SCHEMA = ROOT / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def shipped():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def with_lm(config, **settings):
    bad = copy.deepcopy(config)
    bad["language_models"]["stories"] = {**bad["language_models"]["stories"], **settings}
    return bad


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"modules": ["mlp_out", "model.layers.7.mlp.down_proj"]},
            r"language_models.stories.modules'.*match no module",
        ),
        ({"modules": ["lm_head_out"]}, r"\['lm_head_out'\] match no module"),
        ({"lanczos_steps": 10}, r"language_models.stories.lanczos_steps'.*fewer than top_k = 25"),
        ({"output_metric": "nowhere.npy"}, r"language_models.stories.output_metric'.*existing \(C, C\) .npy"),
        ({"per_class": 1}, r"'language_models.stories.per_class': 1 is less than the minimum of 2"),
        (
            {"modules": ["mlp_out"], "init_modules": ["embedding"]},
            r"language_models.stories.init_modules'.*\['embedding.0'\] are not among its modules",
        ),
        ({"init_modules": ["attn_out"]}, r"language_models.stories.init_modules'.*control .* add mlp_out"),
    ],
)
def test_bad_entries_are_named(shipped, settings, message):
    with pytest.raises(ConfigError, match=message):
        check_config(with_lm(shipped, **settings), SCHEMA, str(ROOT))


def test_entries_need_a_language_model_experiment(shipped):
    bad = copy.deepcopy(shipped)
    bad["language_models"]["mlp"] = {}
    with pytest.raises(ConfigError, match=r"language_models.mlp'.*story_lm"):
        check_config(bad, SCHEMA, str(ROOT))
    bad = copy.deepcopy(shipped)
    bad["paper"]["lm"]["seeds"] = ["stories", "transformer"]
    with pytest.raises(ConfigError, match=r"paper.lm.seeds'.*\['transformer'\] have no language_models entry"):
        check_config(bad, SCHEMA, str(ROOT))
    with pytest.raises(ConfigError, match=r"paper.lm.experiment'.*add mlp_out"):
        check_config(with_lm(shipped, modules=["attn_out"]), SCHEMA, str(ROOT))


def test_roles_expand_per_block():
    params = get_kind("story_lm").parameters(get_kind("story_lm").with_defaults({"n_layers": 3}))
    modules, unknown = expand_modules(["mlp_out", "attn_out", "embedding", "model.layers.1.mlp.up_proj"], params)
    assert modules == [
        "mlp_out.0",
        "mlp_out.1",
        "mlp_out.2",
        "attn_out.0",
        "attn_out.1",
        "attn_out.2",
        "embedding.0",
        "model.layers.1.mlp.up_proj",
    ]
    assert unknown == []
