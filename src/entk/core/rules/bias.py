"""A parameter added to (or subtracted from) an activation, broadcast over the samples and any other
axes it lacks: ``x + b``, ``torch.add``, ``x - b``. Its per-sample Jacobian is the output gradient
summed over the broadcast axes."""

from __future__ import annotations

import torch
from torch import Tensor

from entk.core.rules.base import Call, Rule, Use, sample_leading


def _reduce_to(g: Tensor, shape: torch.Size) -> Tensor:
    """g (n, *out) summed over the axes where a broadcast operand of ``shape`` has size 1 or none."""
    lead = g.ndim - 1 - len(shape)
    g = g.sum(dim=tuple(range(1, 1 + lead))) if lead else g
    axes = tuple(1 + i for i, s in enumerate(shape) if s == 1 and g.shape[1 + i] != 1)
    return g.sum(dim=axes, keepdim=True) if axes else g


class BiasRule(Rule):
    """Addition and subtraction with one parameter operand that has fewer axes than the output."""

    functions = (
        torch.add,
        Tensor.add,
        Tensor.__add__,
        Tensor.__radd__,
        torch.sub,
        Tensor.sub,
        Tensor.__sub__,
        Tensor.__rsub__,
    )

    def uses(self, call: Call) -> list[Use] | None:
        out = call.out
        if len(call.tracked) != 1 or not sample_leading(out, call.n) or len(call.args) < 2:
            return None
        ((index, (name, pos)),) = call.tracked.items()
        if not isinstance(index, int) or pos.ndim >= out.ndim:
            return None
        other = call.args[1 - index]
        if not sample_leading(other, call.n):
            return None
        subtract = call.func in (torch.sub, Tensor.sub, Tensor.__sub__)
        sign = -1.0 if (subtract and index == 1) or (call.func is Tensor.__rsub__ and index == 0) else 1.0
        sign *= call.kwargs.get("alpha", 1) if index == 1 else 1
        shape = pos.shape
        n = out.shape[0]

        def to_grad(g: Tensor) -> Tensor:
            r = _reduce_to(g, shape).reshape(g.shape[0], 1, -1)
            return r if sign == 1.0 else sign * r

        ones = out.new_ones(n, 1, 1)
        return [Use(name, pos.reshape(1, -1), out, ones, 1, False, to_grad)]
