"""The memory policy: one working-memory budget for chunks of samples, blocks of kernel and solvers.

The budget is the ``max_memory_gb`` keyword, else $ENTK_MAX_MEMORY_GB, else 4 GB. What is held
whole (the kernels themselves, each layer's reduced factors) is not counted against it; what is
built piece by piece (chunks of samples, blocks of a dense kernel, the solver's basis) is sized to it.
Neither may exceed the machine: a budget above its memory is refused, and so is a plan whose
estimate does not fit (``check_fits``), before anything is allocated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

DEFAULT_MAX_MEMORY_GB = 4.0
MAX_MEMORY_ENV = "ENTK_MAX_MEMORY_GB"


def _from_environment() -> float:
    raw = os.environ.get(MAX_MEMORY_ENV)
    if raw is None:
        return DEFAULT_MAX_MEMORY_GB
    try:
        return float(raw)
    except ValueError:
        raise ValueError(
            f"${MAX_MEMORY_ENV}={raw!r} is not a number; set it to a budget in GB (e.g. 8) or unset it"
        ) from None


def resolve_max_memory_gb(max_memory_gb: float | None) -> float:
    """The memory budget in GB: the keyword, else $ENTK_MAX_MEMORY_GB, else 4; a positive finite
    number no larger than the machine's memory (``physical_memory_gb``)."""
    explicit = max_memory_gb is not None or MAX_MEMORY_ENV in os.environ
    value = max_memory_gb if max_memory_gb is not None else _from_environment()
    source = "the keyword" if max_memory_gb is not None else f"${MAX_MEMORY_ENV}"
    if not 0 < value < math.inf:
        raise ValueError(f"max_memory_gb must be positive and finite (a number of GB), got {value} from {source}")
    machine = physical_memory_gb()
    if explicit and value > machine:
        raise ValueError(
            f"max_memory_gb = {value:g} GB (from {source}) exceeds this machine's memory ({machine:.1f} GB); "
            "set a budget it can hold"
        )
    return value


def physical_memory_gb(device=None) -> float:
    """Memory of the machine in GB: a CUDA device's own, else the RAM (or the process's cgroup limit if lower)."""
    if device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory / 2**30
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        total = min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        pass
    return total / 2**30


def check_fits(needed_gb: float, what: str, device=None) -> None:
    """Raise ``MemoryError`` before allocating when ``what`` needs more than the machine has."""
    machine = physical_memory_gb(device)
    if needed_gb > machine:
        raise MemoryError(
            f"{what} needs about {needed_gb:.1f} GB, more than this machine's {machine:.1f} GB whatever "
            "max_memory_gb says; use fewer samples, fewer parameters or a smaller top-k, or method='matrix_free'"
        )


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


def saved_bytes_per_sample(run: Callable[[int], object]) -> tuple[int, int]:
    """What autograd saves per extra sample when ``run(n)`` runs a differentiable pass on the first n
    samples: (bytes of all saved tensors, bytes of the largest one), each the growth from n = 1 to 2.

    Differencing drops what does not grow with the samples (weights, masks shared by the batch); the
    two passes save the same tensors in the same order, so the largest growth is taken tensor by
    tensor. A pass batched over w vectors (cotangents or tangents) keeps the primal's saved tensors
    once, while its transients are of the order of w copies of the largest of them (autograd frees
    each gradient once the ops before it have used it)."""
    import torch

    runs: list[list[int]] = []
    for n in (1, 2):
        sizes: list[int] = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run(n)
        runs.append(sizes)
    total = max(sum(runs[1]) - sum(runs[0]), 0)
    largest = max((b - a for a, b in zip(*runs, strict=False)), default=0) if len(runs[0]) == len(runs[1]) else total
    return total, max(largest, 0)
