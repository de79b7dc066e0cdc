"""What a layer rule gives the structured path: ``Use``, one linear use of a parameter.

A parameter θ enters an operation linearly when the operation's output is, sample by sample, a
sum over positions t of products with a matrix M whose entries are entries of θ (``pos`` maps
each entry of M to θ's flat coordinate). Then the per-sample Jacobian of that use is
Σ_t ℓ_t ⊗ ρ_t laid out on M, where one side is the operation's other operand at position t
(``act``: it depends on the sample only) and the other is the gradient of the output at t
(it depends on the sample and the output differentiated). A parameter used several times has
the sum of its uses' Jacobians: that is where the cross terms of shared weights come from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Call:
    """One torch function call during the traced forward pass, with the selected parameters among its
    operands: ``tracked`` maps an operand's position in ``args`` (or its keyword) to (parameter name,
    pos); ``n`` is the number of samples of the pass. A rule returns one use per tracked operand."""

    func: Callable
    args: tuple
    kwargs: dict
    out: object
    tracked: dict[int | str, tuple[str, Tensor]]
    n: int

    def param(self, index: int, keyword: str) -> tuple[str, Tensor] | None:
        """(name, pos) of the tracked operand at ``index`` or ``keyword``, else None."""
        return self.tracked.get(index, self.tracked.get(keyword))


@dataclass
class Use:
    """One linear use of parameter ``name``.

    pos      (r, s) int64: θ's flat coordinate of each entry of the use's matrix M
    out      the operation's output (n, ...), a node of the autograd graph
    act      the sample-only side: float (n, T, a), or token ids (n, T) over ``act_dim`` ids (-1: none)
    act_dim  a, the length of the act side's vectors (for ids: their number)
    grad_rows  True when M's rows pair with the gradient side (M = Σ_t grad_t ⊗ act_t), False when
             its rows pair with the act side (M = Σ_t act_t ⊗ grad_t)
    to_grad  ∂/∂out (n, *out.shape[1:]) → the gradient side (n, T, g)
    grad_key uses of one output with equal keys have equal gradient sides (a layer's weight and bias),
             so they can share one (None: never shared)
    """

    name: str
    pos: Tensor
    out: Tensor
    act: Tensor
    act_dim: int
    grad_rows: bool
    to_grad: Callable[[Tensor], Tensor]
    grad_key: str | None = None

    def signature(self) -> tuple:
        """What must agree between two forward passes on different numbers of samples."""
        return (self.name, tuple(self.pos.shape), tuple(self.act.shape[1:]), self.act_dim, self.grad_rows)


class Rule:
    """A layer type's rule: the torch functions it reads, and how a call becomes uses (None: not linear
    in the tracked operands the way this rule knows, so they take the generic path)."""

    functions: tuple = ()

    def uses(self, call: Call) -> list[Use] | None:
        raise NotImplementedError


def arg(call: Call, index: int, name: str, default=None):
    """The call's argument by position or keyword."""
    if index < len(call.args):
        return call.args[index]
    return call.kwargs.get(name, default)


def sample_leading(t: object, n: int) -> bool:
    """Whether t is a tensor whose leading axis holds the n samples."""
    return isinstance(t, Tensor) and t.ndim >= 1 and t.shape[0] == n


def outer_rows(act: Tensor, grad: Tensor, act_dim: int, grad_rows: bool = True) -> Tensor:
    """Σ_t grad_t ⊗ act_t per row, (rows, g·a) laid out (g, a) if ``grad_rows`` else (a, g), from the
    gradient side (rows, T, g) and the act side (rows, T, a) or ids (rows, T) over ``act_dim`` ids."""
    if act.is_floating_point():
        return torch.einsum("ntg,nta->nga" if grad_rows else "ntg,nta->nag", grad, act).flatten(1)
    rows, t, w = grad.shape
    valid = (act >= 0).flatten()
    slot = (torch.arange(rows, device=act.device)[:, None] * act_dim + act).flatten()[valid]
    jac = grad.new_zeros(rows * act_dim, w).index_add_(0, slot, grad.reshape(rows * t, w)[valid])
    jac = jac.view(rows, act_dim, w)
    return (jac.transpose(1, 2) if grad_rows else jac).flatten(1)


def act_gram(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """Products a_t · b_s (rows_a·T, rows_b·T) of two act sides; for ids, 1 where the ids agree."""
    if a.is_floating_point():
        return a.flatten(0, 1) @ b.flatten(0, 1).T
    ta, tb = a.flatten()[:, None], b.flatten()[None, :]
    return ((ta == tb) & (ta >= 0)).to(dtype)
