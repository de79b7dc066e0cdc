"""Shared fixtures: the repository root, a small, fast workflow config, and torch's global state left as found."""

import contextlib
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config() -> dict:
    """The shipped config.yaml as a dict (a fresh copy per test)."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _torch_state(torch) -> tuple:
    return (
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
        torch.are_deterministic_algorithms_enabled(),
        torch.get_num_threads(),
    )


def _set_torch_state(torch, state: tuple) -> None:
    dtype, grad, deterministic, threads = state
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _torch_state_as_found():
    """Every test leaves torch's process-wide settings (default dtype, grad mode, determinism, threads)
    as it found them, so no test's outcome depends on which tests ran before it. Torch is touched only
    where it is imported: the torch-free modules' tests stay torch-free."""
    torch = sys.modules.get("torch")
    before = _torch_state(torch) if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        # Imported during the test: what it found was torch's own start-up state.
        _set_torch_state(torch, before or (torch.float32, True, False, torch.get_num_threads()))


@contextlib.contextmanager
def default_dtype(dtype):
    """torch's default dtype set to ``dtype`` inside the block (for module-level cases built at import)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def float64():
    """torch's default dtype float64 for one test (brute-force references compared at 1e-10)."""
    import torch

    with default_dtype(torch.float64):
        yield
