"""Guards on the library's public entry points, for any model a user brings.

``guarded`` wraps a function whose first two arguments are ``model`` (an ``nn.Module``) and ``x``
(N, ...) and, before it runs, refuses inputs that would otherwise give NaN kernels, bare solver
failures or a failure deep inside torch: empty ``x``, non-finite rows of ``x``, non-finite weights
or buffers, non-finite ``output_weights``. It then runs the function with the model in eval mode:
the eNTK is the kernel of the deterministic function the model computes (no dropout draws; batch
norm with its running statistics, so samples stay independent), and computing it never changes
the model — each module's own train/eval flag is restored afterwards and buffers (batch-norm running
statistics) are never written. Callables in the result (matrix-free products) run the model later,
so they are wrapped the same way.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

# Rows or names listed in a message before "…".
SHOWN = 5

NOTE = (
    "Guards (entk.checks.guarded): x must have samples and finite rows, the model finite weights and buffers; "
    "the model runs in eval mode (each module's mode restored afterwards, buffers never written)."
)

_depth = threading.local()


def _listed(items: list, total: int) -> str:
    more = f", … ({total} in all)" if total > len(items) else ""
    return ", ".join(str(i) for i in items) + more


def check_inputs(x: Tensor) -> None:
    """Raise ``ValueError`` when x (N, ...) has no samples or any row with a NaN or infinite entry."""
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x has no samples (shape {tuple(x.shape)}); pass inputs of shape (N, ...) with N ≥ 1")
    if not x.is_floating_point() and not x.is_complex():
        return
    bad = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(dim=1).nonzero().flatten()
    if bad.numel():
        rows = bad[:SHOWN].tolist()
        raise ValueError(
            f"x has NaN or infinite entries in rows {_listed(rows, bad.numel())} (of N = {x.shape[0]}); "
            "drop or repair those samples"
        )


def check_model(model: nn.Module) -> None:
    """Raise ``ValueError`` naming every parameter and floating buffer of ``model`` that is not finite."""
    tensors = [("parameter", n, t) for n, t in model.named_parameters()]
    tensors += [("buffer", n, t) for n, t in model.named_buffers() if t.is_floating_point()]
    if not tensors:
        return
    # One device sync for all of them rather than one per tensor.
    device = tensors[0][2].device
    finite = torch.stack([torch.isfinite(t.detach()).all().to(device) for _, _, t in tensors])
    bad = [f"{kind} {name!r}" for (kind, name, _), ok in zip(tensors, finite.tolist(), strict=False) if not ok]
    if bad:
        raise ValueError(
            f"the model's weights are not finite: {_listed(bad[:SHOWN], len(bad))} hold NaN or infinite values "
            "(a diverged training run or a corrupt checkpoint); load finite weights"
        )


def check_output_weights(weights) -> None:
    """Raise ``ValueError`` when given output weights (C,) are not all finite."""
    if weights is not None and not torch.isfinite(torch.as_tensor(weights, dtype=torch.float64)).all():
        raise ValueError("output_weights hold NaN or infinite values; pass finite weights (C,)")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with every module in eval mode, then give each module back its own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _in_eval_mode(model: nn.Module, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with eval_mode(model):
            return fn(*args, **kwargs)

    return run


def guarded(fn: Callable) -> Callable:
    """Decorate a public entry point ``fn(model, x, ...)`` with the checks and eval mode above.

    Nested guarded calls (e.g. ``empirical_ntk`` calling ``compact_ntk``) check once, at the outside.
    """

    @functools.wraps(fn)
    def entry(model: nn.Module, x: Tensor, *args, **kwargs):
        if getattr(_depth, "value", 0):
            return fn(model, x, *args, **kwargs)
        check_inputs(torch.as_tensor(x))
        check_model(model)
        check_output_weights(kwargs.get("output_weights"))
        _depth.value = 1
        try:
            with eval_mode(model):
                result = fn(model, x, *args, **kwargs)
        finally:
            _depth.value = 0
        if callable(result):
            return _in_eval_mode(model, result)
        if isinstance(result, tuple) and result and callable(result[0]):
            return (_in_eval_mode(model, result[0]), *result[1:])
        return result

    entry.__doc__ = f"{fn.__doc__ or ''}\n\n{NOTE}"
    return entry
