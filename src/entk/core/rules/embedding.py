"""Lookups of a parameter's rows by token ids: ``F.embedding`` (``nn.Embedding``) and ``weight[ids]``.
The act side is the ids themselves (a one-hot row each), so nothing of size vocabulary × samples is formed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from entk.core.rules.base import Call, Rule, Use, arg, sample_leading


def lookup_use(name: str, pos: Tensor, ids: Tensor, out: Tensor, padding_idx: int | None) -> Use:
    """The use of a (V, d) table ``pos`` looked up at ids (n, …) into out (n, …, d)."""
    n, vocab = ids.shape[0], pos.shape[0]
    ids = ids.reshape(n, -1)
    if padding_idx is not None:
        # The padding row never receives a gradient: its ids count as no id (-1).
        ids = ids.masked_fill(ids == padding_idx % vocab, -1)
    width = pos[0].numel()
    return Use(name, pos.reshape(vocab, width), out, ids, vocab, False, lambda g: g.reshape(g.shape[0], -1, width))


class EmbeddingRule(Rule):
    """``F.embedding``; ``max_norm`` (renormalises the table in place) and ``scale_grad_by_freq`` (depends
    on the batch) take the generic path."""

    functions = (F.embedding,)

    def uses(self, call: Call) -> list[Use] | None:
        ids, tracked = arg(call, 0, "input"), call.param(1, "weight")
        if tracked is None or call.param(0, "input") or not sample_leading(ids, call.n):
            return None
        if arg(call, 3, "max_norm") is not None or arg(call, 5, "scale_grad_by_freq", False):
            return None
        name, pos = tracked
        if pos.ndim != 2 or ids.is_floating_point():
            return None
        return [lookup_use(name, pos, ids, call.out, arg(call, 2, "padding_idx"))]


class IndexRule(Rule):
    """``weight[ids]`` with one integer tensor of ids (n, …) selecting rows of a parameter."""

    functions = (Tensor.__getitem__,)

    def uses(self, call: Call) -> list[Use] | None:
        tracked, ids = call.param(0, "self"), call.args[1]
        if tracked is None or not sample_leading(ids, call.n) or ids.is_floating_point() or ids.dtype.is_complex:
            return None
        if ids.dtype == torch.bool:
            return None
        name, pos = tracked
        return [lookup_use(name, pos.reshape(pos.shape[0], -1), ids, call.out, None)]
