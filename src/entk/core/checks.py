"""Guards on the library's public entry points, for any model a user brings.

``guarded`` wraps a function whose first two arguments are ``model`` (an ``nn.Module``) and ``x``
(N, ...) and, before it runs, refuses inputs that would otherwise give NaN kernels, bare solver
failures or a failure deep inside torch: empty ``x``, non-finite rows of ``x``, a model without
usable parameters (none, meta, half precision, complex, not finite) or with NaN buffers, bad
``output_weights`` (``check_model``, ``check_output_weights``). It then runs the function with the model in eval mode:
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

from entk.core.selection import forward_checked

# Rows or names listed in a message before "…".
SHOWN = 5

NOTE = (
    "Guards (entk.core.checks.guarded): x must have samples and finite rows, the model float32/float64 parameters "
    "that are finite and buffers without NaN; "
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


# The precisions the kernels and eigensolvers run in (LAPACK has no half-precision eigh).
KERNEL_DTYPES = (torch.float32, torch.float64)


def check_model(model: nn.Module) -> None:
    """Raise ``ValueError`` for a model whose eNTK cannot be computed: no parameters, parameters on the
    meta device or in a precision other than float32/float64, a parameter that is not finite, or a
    floating buffer holding NaN. Buffers may hold ±inf: that is how attention masks are written
    (``nn.Transformer.generate_square_subsequent_mask``)."""
    params = list(model.named_parameters())
    if not params:
        raise ValueError("the model has no parameters, so it has no eNTK; pass a model with weights")
    meta = [n for n, p in params if p.is_meta]
    if meta:
        raise ValueError(
            f"parameters {_listed(meta[:SHOWN], len(meta))} are on the meta device (shapes without values); "
            "materialise and load the weights first, e.g. model.to_empty(device='cpu') then model.load_state_dict(...)"
        )
    odd = [f"{n!r} ({p.dtype})" for n, p in params if p.dtype not in KERNEL_DTYPES]
    if odd:
        raise ValueError(
            f"parameters {_listed(odd[:SHOWN], len(odd))} are not float32 or float64, the precisions the eNTK is "
            "computed in; convert the model with model.float() or model.double()"
        )
    tensors = [("parameter", n, t, torch.isfinite) for n, t in params]
    tensors += [("buffer", n, t, _not_nan) for n, t in model.named_buffers() if t.is_floating_point()]
    # One device sync for all of them rather than one per tensor.
    device = params[0][1].device
    ok = torch.stack([test(t.detach()).all().to(device) for _, _, t, test in tensors])
    bad = [f"{kind} {name!r}" for (kind, name, _, _), good in zip(tensors, ok.tolist(), strict=False) if not good]
    if bad:
        raise ValueError(
            f"the model's weights are not finite: {_listed(bad[:SHOWN], len(bad))} hold NaN (or, a parameter, "
            "infinite) values (a diverged training run or a corrupt checkpoint); load finite weights"
        )


def _not_nan(t: Tensor) -> Tensor:
    return ~torch.isnan(t)


def check_output_weights(weights) -> None:
    """Raise ``ValueError`` when given output weights (C,) are not finite or all zero (a zero kernel).

    A weight of zero drops its output from the kernel; a negative one flips the signs of the kernel's
    blocks against the other outputs (it scales by w_c w_d), which the library allows and the
    workflow's config refuses as a likely mistake (``entk.pipeline.preflight``)."""
    if weights is None:
        return
    w = torch.as_tensor(weights, dtype=torch.float64)
    if not torch.isfinite(w).all():
        raise ValueError("output_weights hold NaN or infinite values; pass finite weights (C,)")
    if w.numel() and not w.any():
        raise ValueError("every output weight is zero, so the kernel would be zero; give at least one nonzero weight")


class AnalysedOutput(nn.Module):
    """A model whose forward returns a tuple or a mapping, seen as the model of the one tensor analysed:
    a tuple's first element (Hugging Face's ``return_dict=False`` puts the logits first) or a mapping's
    ``"logits"`` (a ``ModelOutput``). It shares the model's parameters, buffers, submodules and mode,
    so parameter names and ``functional_call`` are the model's own."""

    def __init__(self, net: nn.Module, key):
        training = net.training
        object.__setattr__(self, "_net", net)
        super().__init__()
        self.__dict__.update(_parameters=net._parameters, _buffers=net._buffers, _modules=net._modules)
        net.training = training
        self.key = key

    @property
    def training(self) -> bool:
        return self._net.training

    @training.setter
    def training(self, mode: bool) -> None:
        self._net.training = mode

    def train(self, mode: bool = True) -> AnalysedOutput:
        self._net.train(mode)
        return self

    def forward(self, *args, **kwargs) -> Tensor:
        return self._net(*args, **kwargs)[self.key]


def analysed_model(model: nn.Module, x1: Tensor) -> nn.Module:
    """``model`` if its forward on x1 (1, ...) returns a tensor, else its ``AnalysedOutput``; a ``ValueError``
    says what the forward returned when no tensor in it is the one to analyse."""
    with torch.no_grad():
        out = model(x1)
    if isinstance(out, Tensor):
        return model
    if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
        return AnalysedOutput(model, 0)
    if isinstance(out, dict) and isinstance(out.get("logits"), Tensor):
        return AnalysedOutput(model, "logits")
    what = f"a mapping with keys {sorted(map(str, out))}" if isinstance(out, dict) else type(out).__name__
    raise ValueError(
        f"the model's forward returns {what}; entk analyses a tensor (N, C), a tuple's first element or a "
        "mapping's 'logits': wrap the model in a module whose forward returns the tensor to analyse"
    )


# Samples per forward pass of the output check: a bound on its activations (16 sequences of 1024
# tokens through eager attention hold about 0.8 GB per layer's scores), not a tuning knob.
_CHECK_CHUNK = 16


def finite_outputs(model: nn.Module, x: Tensor) -> int:
    """C, the number of outputs of ``model`` on x (N, ...), after one forward pass over every sample;
    ``ValueError`` naming the samples whose outputs are NaN or infinite (the model is undefined there)."""
    bad, c = [], None
    with torch.no_grad():
        for start in range(0, x.shape[0], _CHECK_CHUNK):
            out = forward_checked(model, x[start : start + _CHECK_CHUNK])
            c = out.shape[1]
            bad += (start + (~torch.isfinite(out)).any(dim=1).nonzero().flatten()).tolist()
    if bad:
        raise ValueError(
            f"the model's outputs are NaN or infinite for samples {_listed(bad[:SHOWN], len(bad))} (of N = "
            f"{x.shape[0]}) whose inputs are finite: the model is undefined there (a log or square root of a "
            "negative, a division by zero); drop those samples or repair the model"
        )
    return c


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
