"""The Python sources pass ruff's lint rules and are ruff-formatted (settings in pyproject.toml)."""

import subprocess
import sys

import pytest

from conftest import ROOT

PATHS = ["src", "scripts", "tests", "benchmarks", "examples"]


@pytest.mark.parametrize(
    "command",
    [["check", "--no-fix", "--output-format", "concise"], ["format", "--check", "--diff"]],
    ids=["lint", "format"],
)
def test_ruff_clean(command):
    # The ruff of the running environment (pinned in requirements-dev.txt), not whatever is on PATH.
    run = subprocess.run([sys.executable, "-m", "ruff", *command, *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"ruff {' '.join(command)}:\n{run.stdout}{run.stderr}"
