"""Shared fixtures: the repository root and a small, fast workflow config."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config() -> dict:
    """The shipped config.yaml as a dict (a fresh copy per test)."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())
