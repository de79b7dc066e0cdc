"""Find where the selected parameters enter the forward pass, from the operations themselves.

``Tracer`` is a ``TorchFunctionMode``: during one forward pass it sees every torch function call,
follows each selected parameter through views that only rearrange its entries (``.T``, transpose,
reshape, flatten, slicing, …; the same view applied to a tensor of flat coordinates says where each
entry came from) and hands every call that takes a parameter or such a view to the rule registered
for that function (``entk.core.rules``). A parameter that reaches any other function (a nonlinearity,
a product with itself, a cast) is marked for the generic path; so is one whose rules' Jacobians do
not add up to autograd's gradient on a probe of two samples (``plan``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from entk.core.rules import BY_FUNCTION, Call, Use
from entk.core.rules.base import outer_rows
from entk.core.selection import forward_checked

_VIEWS = {
    Tensor.T.__get__,
    Tensor.mT.__get__,
    Tensor.t,
    torch.t,
    Tensor.transpose,
    torch.transpose,
    Tensor.permute,
    torch.permute,
    Tensor.flatten,
    torch.flatten,
    Tensor.unflatten,
    Tensor.reshape,
    torch.reshape,
    Tensor.view,
    Tensor.squeeze,
    torch.squeeze,
    Tensor.unsqueeze,
    torch.unsqueeze,
    Tensor.contiguous,
    Tensor.narrow,
    torch.narrow,
    Tensor.select,
    torch.select,
    Tensor.expand,
}


def _is_basic_index(index) -> bool:
    """Slices, ints, None and Ellipsis only: indexing that is a view."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


class Tracer(TorchFunctionMode):
    """Record the uses of the parameters ``params`` ({name: tensor}) in forward passes on n samples."""

    def __init__(self, params: dict[str, Tensor], n: int):
        super().__init__()
        self.n = n
        self.origin: dict[int, tuple[str, Tensor]] = {
            id(p): (name, torch.arange(p.numel(), device=p.device).view(p.shape)) for name, p in params.items()
        }
        # Views stay referenced so that their ids are not reused during the pass.
        self.alive: list[Tensor] = list(params.values())
        self.uses: list[Use] = []
        self.unrecognised: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.einsum and len(args) == 2 and isinstance(args[1], (list, tuple)):
            args = (args[0], *args[1])
        tracked = {i: self.origin[id(a)] for i, a in enumerate(args) if isinstance(a, Tensor) and id(a) in self.origin}
        tracked.update(
            {k: self.origin[id(v)] for k, v in kwargs.items() if isinstance(v, Tensor) and id(v) in self.origin}
        )
        nested = [
            self.origin[id(t)][0]
            for a in args
            if isinstance(a, (list, tuple))
            for t in a
            if isinstance(t, Tensor) and id(t) in self.origin
        ]
        if nested:
            self.unrecognised.update(nested)
        if not tracked:
            return out
        names = {name for name, _ in tracked.values()}
        if self._view(func, args, kwargs, out, tracked):
            return out
        rule = BY_FUNCTION.get(func)
        uses = None if rule is None else rule.uses(Call(func, args, kwargs, out, tracked, self.n))
        if uses is None or len(uses) != len(tracked) or not all(isinstance(u.out, Tensor) for u in uses):
            self.unrecognised.update(names)
        else:
            self.uses.extend(uses)
        return out

    def _view(self, func, args, kwargs, out, tracked) -> bool:
        """Follow a view of one tracked tensor: its coordinates go through the same view."""
        if func not in _VIEWS and not (func is Tensor.__getitem__ and _is_basic_index(args[1])):
            return False
        if list(tracked) != [0] or not isinstance(out, Tensor):
            return False
        name, pos = tracked[0]
        try:
            moved = func(pos, *args[1:], **kwargs)
        except (RuntimeError, TypeError, IndexError):
            return False
        if not isinstance(moved, Tensor) or moved.shape != out.shape:
            return False
        self.origin[id(out)] = (name, moved)
        self.alive.append(out)
        return True


@contextlib.contextmanager
def gradients_on(params: dict[str, Tensor]) -> Iterator[None]:
    """Let the selected parameters require gradients for a pass (frozen ones too), then restore."""
    flags = {name: p.requires_grad for name, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(True)
        yield
    finally:
        for name, p in params.items():
            p.requires_grad_(flags[name])


def traced_forward(model: nn.Module, x: Tensor, params: dict[str, Tensor]) -> tuple[Tensor, Tracer]:
    """Outputs (n, C) with gradients on, and the uses of ``params`` in that forward pass."""
    tracer = Tracer(params, x.shape[0])
    with gradients_on(params), torch.enable_grad(), tracer:
        f = forward_checked(model, x)
    return f, tracer


def jacobian_rows(use: Use, grad: Tensor) -> Tensor:
    """The use's per-row Jacobian (rows, r·s) on its matrix, from the gradient side (rows, T, g)."""
    return outer_rows(use.act, grad, use.act_dim, use.grad_rows)


class Plan(NamedTuple):
    """Which parameters take the structured path, and the probe's uses of them (one sample, call order)."""

    structured: set[str]
    probe: list[Use]


def plan(model: nn.Module, x: Tensor, names: list[str]) -> Plan:
    """The parameters among ``names`` whose uses are all recognised, per sample, and exact, and their
    uses in a forward pass on one sample (in call order).

    Forward passes on one and on two samples must give the same uses (so every use keeps the sample
    axis leading), and on two samples the uses' Jacobians, summed over samples, must reproduce
    autograd's gradient of a random combination of the outputs.
    """
    named = dict(model.named_parameters())
    params = {n: named[n] for n in names}
    k = min(2, x.shape[0])
    _, one = traced_forward(model, x[:1], params)
    f, two = traced_forward(model, x[:k], params)
    ok = set(names) - one.unrecognised - two.unrecognised
    sig_one: dict[str, list] = {n: [] for n in names}
    sig_two: dict[str, list] = {n: [] for n in names}
    for use in one.uses:
        sig_one[use.name].append(use.signature())
    for use in two.uses:
        sig_two[use.name].append(use.signature())
    ok = {n for n in ok if sig_one[n] == sig_two[n] and sig_two[n]}
    uses = [u for u in two.uses if u.name in ok]
    if not uses:
        return Plan(set(), [])
    cot = torch.randn(f.shape, generator=torch.Generator().manual_seed(0), dtype=f.dtype).to(f.device)
    outs = list({id(u.out): u.out for u in uses}.values())
    with gradients_on(params):
        grads = torch.autograd.grad((f * cot).sum(), outs + [params[n] for n in sorted(ok)], allow_unused=True)
    out_grads = {id(o): g for o, g in zip(outs, grads, strict=False)}
    want = {n: g for n, g in zip(sorted(ok), grads[len(outs) :], strict=True)}
    got = {n: torch.zeros(params[n].numel(), dtype=f.dtype, device=f.device) for n in ok}
    for use in uses:
        g = out_grads[id(use.out)]
        if g is None:
            continue
        rows = jacobian_rows(use, use.to_grad(g).detach()).sum(0)
        got[use.name].index_add_(0, use.pos.flatten(), rows)
    tol = math.sqrt(torch.finfo(f.dtype).eps)
    exact = set()
    for n in ok:
        w = torch.zeros_like(got[n]) if want[n] is None else want[n].flatten()
        if (got[n] - w).norm() <= tol * max(got[n].norm(), w.norm()):
            exact.add(n)
    return Plan(exact, [u for u in one.uses if u.name in exact])
