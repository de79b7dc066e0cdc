"""Matrix products with a parameter: ``F.linear`` (``nn.Linear``), ``@``/``matmul`` on either side, and
two-operand ``einsum``. All three are one contraction: output letters = sample, positions and the
parameter's output-side letters; the parameter's other letters are summed against the activation."""

from __future__ import annotations

import string

import torch
import torch.nn.functional as F
from torch import Tensor

from entk.core.rules.base import Call, Rule, Use, arg, sample_leading


def contraction_use(
    name: str, pos: Tensor, p_letters: str, act: Tensor, a_letters: str, out: Tensor, o_letters: str, s: str = ""
) -> Use | None:
    """The use of parameter ``name`` (coordinates ``pos``) in out[o] = Σ act[a] · θ[p], einsum letters;
    ``s`` is the sample letter (default: the first of ``a_letters``), which must also index the output.
    None where the contraction is not of the plain kind (a letter of θ shared by both sides, or summed
    within θ alone, or a repeated letter)."""
    s = s or a_letters[0]
    if s not in o_letters or s in p_letters or len(set(p_letters)) != len(p_letters):
        return None
    o = "".join(x for x in p_letters if x in o_letters and x not in a_letters)
    a = "".join(x for x in p_letters if x in a_letters and x not in o_letters)
    if len(o) + len(a) != len(p_letters) or len(set(a_letters)) != len(a_letters):
        return None
    t = "".join(x for x in o_letters if x in a_letters and x not in p_letters and x != s)
    if any(x not in p_letters + t + s for x in o_letters):
        return None
    n = act.shape[a_letters.index(s)]
    act_side = torch.einsum(f"{a_letters}->{s}{t}{a}", act.detach()).reshape(n, -1, max(1, _size(pos, p_letters, a)))
    g_shape = _size(pos, p_letters, o)

    def to_grad(g: Tensor) -> Tensor:
        return torch.einsum(f"{o_letters}->{s}{t}{o}", g).reshape(g.shape[o_letters.index(s)], -1, g_shape)

    perm = [p_letters.index(x) for x in o + a]
    matrix = pos.permute(perm).reshape(g_shape, -1)
    return Use(name, matrix, out, act_side, act_side.shape[2], True, to_grad, f"{o_letters}->{s}{t}{o}:{g_shape}")


def _size(pos: Tensor, letters: str, chosen: str) -> int:
    size = 1
    for x in chosen:
        size *= pos.shape[letters.index(x)]
    return size


def _letters(ndim: int, skip: str = "") -> str:
    return "".join(x for x in string.ascii_lowercase if x not in skip)[:ndim]


class LinearRule(Rule):
    """``F.linear(input, weight, bias)``: weight (out, in) against input (n, …, in); bias as a column of ones."""

    functions = (F.linear,)

    def uses(self, call: Call) -> list[Use] | None:
        x, out = arg(call, 0, "input"), call.out
        if call.param(0, "input") or not sample_leading(x, call.n) or not sample_leading(out, call.n) or x.ndim < 2:
            return None
        lead = _letters(x.ndim - 1, "oi")
        found = []
        for index, keyword in ((1, "weight"), (2, "bias")):
            tracked = call.param(index, keyword)
            if tracked is not None:
                name, pos = tracked
                act = x if index == 1 else x.new_ones(*x.shape[:-1], 1)
                found.append(
                    contraction_use(name, pos if index == 1 else pos[:, None], "oi", act, lead + "i", out, lead + "o")
                )
        return None if None in found else found


class MatmulRule(Rule):
    """``a @ b``, ``torch.matmul``, ``mm``: a 2-D parameter on either side of an activation whose
    leading axis holds the samples, or, as ``W @ x.T``, a 2-D activation whose last axis does."""

    functions = (torch.matmul, Tensor.matmul, Tensor.__matmul__, Tensor.__rmatmul__, torch.mm, Tensor.mm)

    def uses(self, call: Call) -> list[Use] | None:
        left, right = call.args[0], call.args[1]
        tracked = dict(call.tracked)
        if call.func is Tensor.__rmatmul__:
            left, right = right, left
            tracked = {1 - i: v for i, v in tracked.items()}
        out = call.out
        if len(tracked) != 1 or not isinstance(out, Tensor):
            return None
        ((side, (name, pos)),) = tracked.items()
        param, act = (right, left) if side == 1 else (left, right)
        if side == 0 and param.ndim == 2 and act.ndim == 2 == out.ndim and act.shape[1] == call.n == out.shape[1]:
            return _one(contraction_use(name, pos, "ik", act, "ks", out, "is", s="s"))
        if param.ndim != 2 or not sample_leading(act, call.n) or not sample_leading(out, call.n):
            return None
        if side == 1 and act.ndim >= 2:
            lead = _letters(act.ndim - 1, "kj")
            return _one(contraction_use(name, pos, "kj", act, lead + "k", out, lead + "j"))
        if side == 0 and act.ndim >= 3:
            lead = _letters(act.ndim - 2, "ikj")
            return _one(contraction_use(name, pos, "ik", act, lead + "kj", out, lead + "ij"))
        return None


class EinsumRule(Rule):
    """``torch.einsum(equation, activation, parameter)`` (either order) with an explicit output."""

    functions = (torch.einsum,)

    def uses(self, call: Call) -> list[Use] | None:
        eq, ops = call.args[0], call.args[1:]
        if not isinstance(eq, str) or "->" not in eq or "." in eq or len(ops) != 2 or len(call.tracked) != 1:
            return None
        ins, o_letters = eq.replace(" ", "").split("->")
        letters = ins.split(",")
        ((index, (name, pos)),) = call.tracked.items()
        if not isinstance(index, int):
            return None
        p_at, a_at = index - 1, 2 - index
        if not sample_leading(ops[a_at], call.n) or not sample_leading(call.out, call.n):
            return None
        return _one(contraction_use(name, pos, letters[p_at], ops[a_at], letters[a_at], call.out, o_letters))


def _one(use: Use | None) -> list[Use] | None:
    return None if use is None else [use]
