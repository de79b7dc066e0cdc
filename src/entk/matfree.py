"""Matrix-free eNTK: kernel–vector products K V without forming K or J.

K = F Fᵀ in every output mode (``entk.kernels``), so K V = F (Fᵀ V): Fᵀ V is a vector–Jacobian
product (``torch.func.vjp``, cotangents on the outputs) and F U a Jacobian–vector product
(``torch.func.jvp``), each batched over the block of vectors with ``torch.func.vmap``. Memory is
one block of parameter-shaped tangents (b, P) plus the intermediates of one chunk of samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from entk.kernels import OUTPUT_MODES, _check_weights, _forward_checked, resolve_params

Matvec = Callable[[Tensor], Tensor]
Params = dict[str, Tensor]


def _functional(model: nn.Module, names: list[str]) -> tuple[Callable[[Params, Tensor], Tensor], Params]:
    """f(selected params, x (n, ...)) -> (n, C) with every other parameter and buffer frozen."""
    named = dict(model.named_parameters())
    selected = {k: named[k].detach() for k in names}
    frozen = {k: v.detach() for k, v in named.items() if k not in selected}
    frozen.update(dict(model.named_buffers()))

    def f(p: Params, xs: Tensor) -> Tensor:
        return functional_call(model, {**frozen, **p}, (xs,))

    return f, selected


def _bytes_per_sample(f: Callable[[Params, Tensor], Tensor], primals: Params, x: Tensor) -> int:
    """Bytes autograd saves per extra sample in one forward, i.e. the per-sample activation size."""
    sizes = []
    for n in (1, 2):
        total = 0

        def pack(t: Tensor) -> Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        p = {k: v.detach().requires_grad_() for k, v in primals.items()}
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            f(p, x[:n])
        sizes.append(total)
    # Differencing two sizes drops what does not grow with the samples (saved weights).
    return max(sizes[1] - sizes[0], x[:1].numel() * x.element_size(), 1)


def _jjt(f: Callable[[Params, Tensor], Tensor], primals: Params, x: Tensor, cot: Tensor, chunk: int) -> Tensor:
    """J Jᵀ on a block of output cotangents: cot (B, N, C) -> (B, N, C), samples in chunks of ``chunk``."""
    starts = range(0, x.shape[0], chunk)
    # Jᵀ v sums over samples, so its chunks accumulate; J u is per sample, so its chunks concatenate.
    tangent: Params | None = None
    for s in starts:
        _, pullback = vjp(lambda p, xs=x[s : s + chunk]: f(p, xs), primals)
        part = vmap(pullback)(cot[:, s : s + chunk])[0]
        tangent = part if tangent is None else {k: tangent[k] + part[k] for k in part}

    def push(xs: Tensor) -> Callable[[Params], Tensor]:
        return lambda t: jvp(lambda p: f(p, xs), (primals,), (t,))[1]

    return torch.cat([vmap(push(x[s : s + chunk]))(tangent) for s in starts], dim=1)


def ntk_matvec(
    model: nn.Module,
    x: Tensor,
    *,
    params: list[str] | None = None,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
    max_memory_gb: float = 1.0,
) -> Matvec:
    """V (dim, b) -> K V (dim, b) for the eNTK of ``outputs`` (dim = C·N class-major, or N), never forming K or J.

    ``max_memory_gb`` bounds the autograd intermediates of one chunk of samples (not the block itself).
    One product costs a vjp and a jvp per vector, C of each for ``diag_mean``.
    """
    if outputs not in OUTPUT_MODES:
        raise ValueError(f"unknown outputs mode {outputs!r}; choose one of {OUTPUT_MODES}")
    ref = next(model.parameters())
    x = x.to(device=ref.device, dtype=ref.dtype if x.is_floating_point() else x.dtype)
    with torch.no_grad():
        n, c = x.shape[0], _forward_checked(model, x[:1]).shape[1]
    w = _check_weights(output_weights, c)
    w = torch.ones(c, dtype=ref.dtype, device=ref.device) if w is None else w.to(ref)
    f, primals = _functional(model, [k for names in resolve_params(model, params).values() for k in names])
    per_sample = _bytes_per_sample(f, primals, x) + 2 * c * ref.element_size()
    budget = max_memory_gb * 2**30

    def jjt(cot: Tensor) -> Tensor:
        # Batched backward and forward-mode passes keep about three activation-sized tensors per vector.
        chunk = max(1, min(n, int(budget // (3 * cot.shape[0] * per_sample))))
        return _jjt(f, primals, x, cot, chunk)

    if outputs == "flatten":

        def kv(v: Tensor) -> Tensor:
            cot = v.T.reshape(-1, c, n).transpose(1, 2) * w
            return (jjt(cot) * w).transpose(1, 2).reshape(-1, c * n).T

    elif outputs == "all_mean":
        # F = (1/C) Σ_c w_c J_c: one cotangent per vector spread over every output.
        def kv(v: Tensor) -> Tensor:
            return (jjt(v.T[:, :, None] * (w / c)) * (w / c)).sum(-1).T

    else:
        # F = [w_1 J_1 … w_C J_C] / √C: K v = (1/C) Σ_c w_c² J_c J_cᵀ v, one output at a time so
        # that the tangents stay one block (b, P) rather than C blocks.
        def kv(v: Tensor) -> Tensor:
            out = torch.zeros_like(v)
            for k in range(c):
                cot = torch.zeros(v.shape[1], n, c, dtype=v.dtype, device=v.device)
                cot[:, :, k] = v.T * w[k]
                out += jjt(cot)[:, :, k].T * w[k]
            return out / c

    # The autodiff passes run in the model's dtype and device; the caller's vectors may not.
    return lambda v: kv(v.to(ref)).to(v)
