"""Convolutions ``F.conv1d``/``F.conv2d`` (``nn.Conv1d``/``Conv2d``, groups 1): the act side is the
input's im2col patches, one position per output location."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from entk.core.rules.base import Call, Rule, Use, arg, sample_leading


def _tuple(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def patches(x: Tensor, kernel: tuple[int, ...], stride, padding, dilation) -> Tensor:
    """im2col patches (n, positions, in·k) of a conv input (n, in, *spatial) with zero padding."""
    dims = len(kernel)
    dilation, stride = _tuple(dilation, dims), _tuple(stride, dims)
    if padding == "valid":
        pads = [(0, 0)] * dims
    elif padding == "same":
        totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(p, p) for p in _tuple(padding, dims)]
    x = F.pad(x, [p for pair in reversed(pads) for p in pair])
    if dims == 1:
        x, kernel, stride, dilation = x.unsqueeze(2), (1, *kernel), (1, *stride), (1, *dilation)
    return F.unfold(x, kernel, dilation=dilation, stride=stride).transpose(1, 2)


class ConvRule(Rule):
    """Weight (out, in, *k) against the input's patches; bias as a column of ones."""

    functions = (F.conv1d, F.conv2d, torch.conv1d, torch.conv2d)

    def uses(self, call: Call) -> list[Use] | None:
        x, w, out = arg(call, 0, "input"), arg(call, 1, "weight"), call.out
        if call.param(0, "input") or arg(call, 6, "groups", 1) != 1:
            return None
        if not sample_leading(x, call.n) or not sample_leading(out, call.n) or x.ndim != w.ndim:
            return None
        n, c_out = x.shape[0], w.shape[0]
        u = patches(
            x.detach(),
            tuple(w.shape[2:]),
            arg(call, 3, "stride", 1),
            arg(call, 4, "padding", 0),
            arg(call, 5, "dilation", 1),
        )

        def to_grad(g: Tensor) -> Tensor:
            return g.flatten(2).transpose(1, 2)

        found = []
        weight, bias = call.param(1, "weight"), call.param(2, "bias")
        if weight is not None:
            found.append(Use(weight[0], weight[1].flatten(1), out, u, u.shape[2], True, to_grad, "conv"))
        if bias is not None:
            found.append(Use(bias[0], bias[1][:, None], out, u.new_ones(n, u.shape[1], 1), 1, True, to_grad, "conv"))
        return found if len(found) == len(call.tracked) and c_out else None
