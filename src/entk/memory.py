"""The memory policy: one working-memory budget for chunks of samples, blocks of kernel and solvers.

The budget is the ``max_memory_gb`` keyword, else $ENTK_MAX_MEMORY_GB, else 4 GB. What is held
whole (the kernels themselves, each layer's reduced factors) is not counted against it; what is
built piece by piece (chunks of samples, blocks of a dense kernel, the solver's basis) is sized to it.
"""

from __future__ import annotations

import math
import os

DEFAULT_MAX_MEMORY_GB = 4.0
MAX_MEMORY_ENV = "ENTK_MAX_MEMORY_GB"


def resolve_max_memory_gb(max_memory_gb: float | None) -> float:
    """The memory budget in GB: the keyword, else $ENTK_MAX_MEMORY_GB, else 4."""
    value = max_memory_gb if max_memory_gb is not None else float(os.environ.get(MAX_MEMORY_ENV, DEFAULT_MAX_MEMORY_GB))
    if not value > 0:
        raise ValueError(f"max_memory_gb must be positive, got {value}")
    return value


def budget_bytes(max_memory_gb: float | None) -> int:
    """Working-memory budget in bytes (``resolve_max_memory_gb``)."""
    return int(resolve_max_memory_gb(max_memory_gb) * 2**30)


def block_rows(elems: int, per_row: float, per_pair: float, dim: int) -> int:
    """Largest block b ≤ dim (at least 1) with per_row·b + per_pair·b² ≤ elems."""
    if per_pair == 0:
        b = elems / per_row
    else:
        b = (math.sqrt(per_row**2 + 4 * per_pair * elems) - per_row) / (2 * per_pair)
    return max(1, min(dim, int(b)))
