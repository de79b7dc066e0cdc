"""Pins and envs: requirements files, pyproject.toml and every conda env pin the same versions, each
env holds only what its rules import, and every rule names an env, a log and its resources."""

import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from conftest import ROOT

ENVS = sorted((ROOT / "envs").glob("*.yaml"))
# conda names that are not Python packages of requirements.txt
CONDA_ONLY = {"python", "pip"}
# import name of each pinned distribution whose import name differs
IMPORT_NAME = {"pyyaml": "yaml"}
PIN = re.compile(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)")


def normalise(name: str) -> str:
    return name.lower().replace("_", "-")


def requirement_pins(filename: str) -> dict[str, str]:
    """name -> version of a requirements file, following `-r other.txt`."""
    pins = {}
    for line in (ROOT / filename).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            pins |= requirement_pins(line[3:].strip())
        elif line:
            name, version = PIN.fullmatch(line).groups()
            pins[normalise(name)] = version
    return pins


def env_pins(env: dict) -> dict[str, str]:
    """name -> version of a conda env; every entry but pip must carry one."""
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                name, version = PIN.fullmatch(pip_dep).groups()
                pins[normalise(name)] = version
        elif dep != "pip":
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)=([0-9][^=\s]*)", dep).groups()
            pins[normalise(name)] = version
    return pins


def test_there_are_the_two_envs():
    assert {p.name for p in ENVS} == {"compute.yaml", "analysis.yaml"}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_parses_and_pins_agree(path):
    env = yaml.safe_load(path.read_text())
    assert set(env) == {"channels", "dependencies"}
    pins = env_pins(env)
    reqs = requirement_pins("requirements.txt")
    assert pins.pop("python") == "3.11"
    for name, version in pins.items():
        assert name in reqs, f"{path.name}: {name} is not pinned in requirements.txt"
        assert version == reqs[name], f"{path.name}: {name}={version} but requirements.txt pins {reqs[name]}"


def test_compute_env_has_torch_and_analysis_env_has_not():
    compute = env_pins(yaml.safe_load((ROOT / "envs/compute.yaml").read_text()))
    analysis = env_pins(yaml.safe_load((ROOT / "envs/analysis.yaml").read_text()))
    assert compute["torch"] == requirement_pins("requirements.txt")["torch"]
    assert "torch" not in analysis
    assert "matplotlib" in analysis


def test_dev_requirements_extend_the_user_ones():
    user, dev = requirement_pins("requirements.txt"), requirement_pins("requirements-dev.txt")
    assert user.items() <= dev.items()
    assert {"pytest", "ruff", "snakefmt"} <= dev.keys() - user.keys()
    assert not {"pytest", "ruff", "snakefmt"} & user.keys(), "test tools belong in requirements-dev.txt"


def test_pyproject_pins_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    dev = requirement_pins("requirements-dev.txt")
    pins = {}
    for dep in declared:
        if not dep.startswith("entk["):  # an extra that names other extras
            name, version = PIN.fullmatch(dep).groups()
            pins[normalise(name)] = version
    assert pins == dev, "pyproject.toml and requirements-dev.txt must pin the same packages and versions"
    runtime = {normalise(PIN.fullmatch(d).group(1)) for d in project["dependencies"]}
    assert "torch" in runtime and not runtime & {"snakemake", "pytest", "ruff"}


def rule_blocks() -> dict[str, str]:
    """rule name -> its text, over the Snakefile and rules/*.smk."""
    rules = {}
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        for block in re.split(r"^(?=rule )", smk.read_text(), flags=re.M)[1:]:
            rules[block.split(":")[0].split()[1]] = block
    return rules


def test_every_rule_has_a_conda_env_log_and_cluster_rules_resources():
    rules = rule_blocks()
    assert {"train", "eigen", "analyse", "claims"} <= set(rules)
    for name, block in rules.items():
        if "script:" not in block and "shell:" not in block:
            continue  # target-only rules (all, scale) run nothing
        for directive in ("conda:", "log:"):
            assert directive in block, f"rule {name} lacks {directive}"
        # A job that goes to a cluster says what it needs; a localrule (a light job on the submit
        # host) takes one core and the profile's default-resources.
        if "localrule: True" not in block:
            for directive in ("resources:", "threads:"):
                assert directive in block, f"rule {name} runs on a cluster node but lacks {directive}"
        envs = re.findall(r'conda:\s*"\.\./(envs/[^"]+)"', block)
        assert envs and (ROOT / envs[0]).exists(), f"rule {name}: conda env file missing"


# Runs a script's module-level imports (and so those of every entk module they pull in) with the
# given top-level packages made unimportable; prints one line per script that needs one of them.
IMPORT_CHECK = """
import ast, sys
blocked, scripts = sys.argv[1].split(","), sys.argv[2:]
for name in blocked:
    sys.modules[name] = None
for script in scripts:
    tree = ast.parse(open(script).read())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    try:
        exec(compile(ast.Module(body=imports, type_ignores=[]), script, "exec"), {})
    except ImportError as error:
        print(f"{script}: {error}")
"""


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_rule_scripts_import_only_what_their_env_has(path):
    """Conda envs are not built here, so check statically-reachable imports instead: a figure rule on
    the analysis env must not import torch at module level, a compute rule must not need matplotlib.
    (Imports inside functions are not followed.)"""
    scripts = []
    for block in rule_blocks().values():
        if f'"../envs/{path.name}"' in block:
            scripts += re.findall(r'script:\s*"\.\./(scripts/[^"]+)"', block)
    if not scripts:
        pytest.skip(f"no rule runs a script in {path.name}")
    in_env = env_pins(yaml.safe_load(path.read_text())).keys()
    pinned = requirement_pins("requirements.txt").keys()
    blocked = sorted(IMPORT_NAME.get(name, name.replace("-", "_")) for name in pinned - in_env)
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, ",".join(blocked), *sorted(set(scripts))],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert not run.stdout, f"scripts that need a package {path.name} lacks ({', '.join(blocked)}):\n{run.stdout}"


def test_the_default_profile_gives_the_light_rules_their_resources():
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert {"mem_mb", "runtime"} <= set(profile["default-resources"])


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_each_env_installs_entk_from_this_checkout(path, tmp_path):
    """Snakemake runs <env>.post-deploy.sh in the new conda env: it must pip-install this checkout's root
    (the folder with pyproject.toml), whatever folder the workflow runs from."""
    script = path.with_suffix(".post-deploy.sh")
    assert script.is_file(), f"{script.name} is missing: jobs in {path.name} could not import entk"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "$@"\n')
    (fake / "python").chmod(0o755)
    run = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env={"PATH": f"{fake}:/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    args = run.stdout.split()
    assert args[:3] == ["-m", "pip", "install"] and "-e" in args, args
    assert (args[args.index("-e") + 1]) == str(ROOT.resolve())


def test_snakemake_without_entk_installed_says_how_to_install_it(tmp_path):
    """The workflow imports entk as a package (no path edits): where it is missing, the message says
    to install it instead of a bare ModuleNotFoundError from deep in the Snakefile."""
    code = "import sys; sys.modules['entk'] = None; from snakemake.cli import main; sys.argv[0] = 'snakemake'; main()"
    run = subprocess.run(
        [sys.executable, "-c", code, "-s", str(ROOT / "Snakefile"), "-n", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "entk is not installed" in run.stdout + run.stderr and "pip install -e" in run.stdout + run.stderr
