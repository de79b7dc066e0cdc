"""The generic path: per-sample Jacobians by ``torch.func`` for parameters the structured path
does not cover (they enter the forward pass other than through a recognised linear operation)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from entk.core.kernel import Kernel


def jacobians(
    model: nn.Module,
    x: Tensor,
    names: list[str],
    weights: Tensor | None,
    n_outputs: int,
    budget: int,
    outputs: str = "flatten",
) -> dict[str, Tensor]:
    """Per-sample Jacobians {param name: (C, N, numel)} by ``vmap(jacrev)``, chunked over samples.

    For ``all_mean`` only the weighted class mean (1/C) Σ_c w_c J_c is needed: it is the Jacobian of
    (1/C) Σ_c w_c f_c, so one reverse pass per sample replaces C and the result is (1, N, numel).
    """
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    selected = {k: params[k].detach() for k in names}
    frozen = {k: v.detach() for k, v in params.items() if k not in selected}
    mean = outputs == "all_mean"

    def f_one(p: dict[str, Tensor], x1: Tensor) -> Tensor:
        f = functional_call(model, {**frozen, **buffers, **p}, (x1.unsqueeze(0),)).squeeze(0)
        if not mean:
            return f
        return (f if weights is None else weights.to(f) * f).mean().unsqueeze(0)

    numel = sum(v.numel() for v in selected.values())
    elem = next(iter(selected.values())).element_size()
    # vmap(jacrev) holds a few copies of a chunk's Jacobian.
    chunk = max(1, budget // (4 * (1 if mean else n_outputs) * numel * elem))
    pieces: dict[str, list[Tensor]] = {k: [] for k in names}
    for start in range(0, x.shape[0], chunk):
        jac = vmap(jacrev(f_one), in_dims=(None, 0))(selected, x[start : start + chunk])
        for k in names:
            j = jac[k].flatten(2).transpose(0, 1)
            pieces[k].append(j if weights is None or mean else weights.to(j)[:, None, None] * j)
    return {k: torch.cat(v, dim=1) for k, v in pieces.items()}


def jacobian_kernel(jac: Tensor, outputs: str, n_outputs: int) -> Kernel:
    """Kernel from a Jacobian (C, N, P), or for ``all_mean`` its class mean (1, N, P), in the compact form."""
    c, n, p = jac.shape
    if outputs == "flatten":
        f = jac.reshape(c * n, p)
    elif outputs == "diag_mean":
        f = jac.permute(1, 0, 2).reshape(n, c * p) / math.sqrt(c)
    else:
        f = jac.mean(0)
    kernel = Kernel("factor", f, n, n_outputs, outputs)
    return kernel if f.shape[1] <= f.shape[0] else kernel.replace("dense", kernel.dense())
