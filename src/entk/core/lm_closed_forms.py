"""Closed-form backward passes of a causal LM's norms and activations, for many pullbacks over one graph.

The stored downstream Jacobian D̃ of ``entk.core.lm_operator`` takes C reverse passes through the same graph
(one per output). Autograd's graph of an RMS norm, x ↦ x·r·w' with r = rsqrt(mean(x²) + eps), is a chain of
pow, mean, rsqrt and products whose backward costs about a dozen element-wise operations a pass; that of an
activation recomputes its derivative (e.g. GELU's tanh) every pass. Here a norm's backward is its closed form

    g ↦ r·(w'⊙g) − (r³/d)·x·⟨x, w'⊙g⟩

on factors computed once in the forward, and an element-wise activation's backward is a product with its
derivative, also computed once. Each replacement is used only where it is exact on the module's actual input:
a norm where its forward is bitwise the module's, for w' the weight or 1 + weight (Gemma's), applied before or
after the cast back to the input's dtype; an activation where a vector–Jacobian product with a fixed random
cotangent equals the cotangent times that derivative (a Jacobian that is not diagonal fails it). Elsewhere the
module runs as it is. The functions have reverse mode only (no jvp, no ``torch.func`` transforms):
``closed_form_calls`` is for plain ``torch.autograd``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

_EPS_NAMES = ("eps", "variance_epsilon")


class _RMSNorm(torch.autograd.Function):
    """x (..., d) ↦ x·r·w', r = rsqrt(mean(x²) + eps) (..., 1) computed in float32, the product with the scale w'
    in float32 before the cast back to x's dtype (Gemma) or in x's dtype after it (``late``, Llama)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, eps: float, late: bool) -> Tensor:
        xf = x.float()
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        out = (xf * r).to(x.dtype) * scale if late else (xf * r * scale).to(x.dtype)
        # The backward's three factors, so that a pass is two products, a dot product and a fused update.
        sf = scale.float()
        ctx.save_for_backward(r * sf, xf * sf, xf * (r**3 / x.shape[-1]))
        ctx.dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None, None]:
        rs, xs, c = ctx.saved_tensors
        g = g.float()
        dot = torch.linalg.vecdot(xs, g).unsqueeze(-1)
        return torch.addcmul(rs * g, c, dot, value=-1).to(ctx.dtype), None, None, None


class _Elementwise(torch.autograd.Function):
    """An element-wise function's output with its derivative d (same shape) held for the backward g ↦ g·d."""

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor, d: Tensor) -> Tensor:
        ctx.save_for_backward(d)
        return out.clone()

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:
        return g * ctx.saved_tensors[0], None, None


def _norm_call(module: nn.Module, original: Callable) -> Callable:
    weight, eps = module.weight, next(getattr(module, n) for n in _EPS_NAMES if hasattr(module, n))

    def call(*args, **kwargs):
        x = args[0] if len(args) == 1 and not kwargs else None
        if x is None or not x.requires_grad or x.shape[-1:] != weight.shape:
            return original(*args, **kwargs)
        with torch.no_grad():
            expected = original(x)
        w = weight.detach()
        for scale, late in ((w.float(), False), (1 + w.float(), False), (w, True)):
            out = _RMSNorm.apply(x, scale, eps, late)
            if torch.equal(out, expected):
                return out
        return original(x)

    return call


def _elementwise_call(original: Callable) -> Callable:
    def call(*args, **kwargs):
        x = args[0] if len(args) == 1 and not kwargs else None
        if x is None or not x.requires_grad or not x.is_floating_point():
            return original(*args, **kwargs)
        with torch.enable_grad():
            x0 = x.detach().requires_grad_()
            out = original(x0)
            # An identity (dropout in eval mode) has no backward to save; a non-differentiable output none at all.
            if out is x0 or not isinstance(out, Tensor) or out.shape != x.shape or not out.requires_grad:
                return original(x)
            d = torch.autograd.grad(out, x0, torch.ones_like(out), retain_graph=True)[0]
            probe = torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype).to(x.device)
            check = torch.autograd.grad(out, x0, probe)[0]
        tol = 16 * torch.finfo(x.dtype).eps
        if not torch.allclose(check, d * probe, rtol=tol, atol=tol * float(check.abs().max())):
            return original(x)
        return _Elementwise.apply(x, out.detach(), d)

    return call


def closed_form_calls(model: nn.Module) -> dict[nn.Module, Callable]:
    """Calls to run instead of the forward of the model's leaf modules that may be norms (one 1-D parameter
    ``weight`` and an eps) or element-wise activations (no parameters); each decides on its input whether its
    closed-form backward applies (see the module's docstring), else runs the module as it is."""
    calls = {}
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue
        params = dict(module.named_parameters(recurse=False))
        original = module.forward
        if not params:
            calls[module] = _elementwise_call(original)
        elif list(params) == ["weight"] and params["weight"].dim() == 1 and any(hasattr(module, n) for n in _EPS_NAMES):
            calls[module] = _norm_call(module, original)
    return calls
