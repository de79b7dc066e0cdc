"""Conda envs: each parses, every rule names one, and its pins agree with requirements.txt."""

import re

import pytest
import yaml

from conftest import ROOT

ENVS = sorted((ROOT / "envs").glob("*.yaml"))


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line).groups()
            pins[name.lower().replace("_", "-")] = version
    return pins


def env_pins(env: dict) -> dict[str, str]:
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                name, version = pip_dep.split("==")
                pins[name.lower()] = version
        elif "=" in dep:
            name, version = dep.split("=", 1)
            pins[name.lower()] = version
    return pins


def test_there_are_envs():
    assert ENVS


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_parses_and_pins_agree(path):
    env = yaml.safe_load(path.read_text())
    assert set(env) == {"channels", "dependencies"}
    pins = env_pins(env)
    reqs = requirement_pins()
    assert pins.get("torch") == "2.13.0"
    for name, version in pins.items():
        if name in reqs:
            assert version == reqs[name], f"{path.name}: {name}={version} but requirements.txt pins {reqs[name]}"


def test_every_rule_has_a_conda_env_log_and_resources():
    rules = {}
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        for block in re.split(r"^(?=rule )", smk.read_text(), flags=re.M)[1:]:
            rules[block.split(":")[0].split()[1]] = block
    assert "train_tms" in rules
    for name, block in rules.items():
        if "script:" not in block and "shell:" not in block:
            continue  # target-only rules (all, scale) run nothing
        for directive in ("conda:", "log:", "resources:", "threads:"):
            assert directive in block, f"rule {name} lacks {directive}"
        envs = re.findall(r'conda:\s*"\.\./(envs/[^"]+)"', block)
        assert envs and (ROOT / envs[0]).exists(), f"rule {name}: conda env file missing"
