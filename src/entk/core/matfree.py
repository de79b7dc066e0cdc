"""Matrix-free eNTK: kernel–vector products without forming K or J.

K = F Fᵀ in every output mode (``entk.core.kernel``). ``products`` sets a model's eNTK up once as
``Products``; three products come from it:

- ``ntk_matvec``    K V = F (Fᵀ V) on vectors of the kernel's side (C·N or N),
- ``param_matvec``  Fᵀ F U on parameter vectors (P), the Gram side: the same nonzero spectrum, and
                    the smaller space when P < C·N (the flattened eNTK of the p = 113 MLP: 174 k
                    against 1.44 M), with ``factor_matvec`` (F U) and ``kernel_vectors`` to map its
                    eigenvectors back.

Fᵀ V is a vector–Jacobian product (``torch.func.vjp``, cotangents on the outputs) and F U a
Jacobian–vector product (``torch.func.jvp``), batched over vectors with ``torch.func.vmap``.
Vectors go through in sub-blocks of ``SUB_BLOCK`` and samples in chunks sized so that one
batched pass's intermediates stay near the last-level cache (``WORKING_SET_BYTES``): on the
p = 113 MLP (2 CPU cores, 32 MB L3) that ran a product 1.6–1.8× faster than one pass over all
samples, whose elementwise steps are bound by memory bandwidth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from entk.core.checks import eval_mode, guarded
from entk.core.kernel import check_outputs, check_weights
from entk.core.memory import resolve_max_memory_gb, saved_bytes_per_sample
from entk.core.selection import n_outputs, resolve_params, to_model
from entk.core.solvers import Matvec, fix_signs, unit_columns

Params = dict[str, Tensor]

SUB_BLOCK = 16
WORKING_SET_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Products:
    """A model's eNTK of ``outputs`` set up for products: f(params, x (n, ...)) -> (n, C) in eval mode,
    the selected parameters' values, output weights (C,), activation bytes per sample and the budget."""

    f: Callable[[Params, Tensor], Tensor]
    primals: Params
    x: Tensor
    weights: Tensor
    outputs: str
    per_sample: int
    budget: float

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def c(self) -> int:
        return self.weights.shape[0]

    @property
    def n_params(self) -> int:
        """P, the side of ``param_matvec``."""
        return sum(t.numel() for t in self.primals.values())

    def chunk(self, vectors: int) -> int:
        """Samples per pass for a batch of ``vectors``: the cache target, capped by the memory budget."""
        # Batched backward and forward-mode passes keep about three activation-sized tensors per vector.
        cap = self.budget // (3 * vectors * self.per_sample)
        return int(max(1, min(self.n, cap, max(1, WORKING_SET_BYTES // (vectors * self.per_sample)))))


def _functional(model: nn.Module, names: list[str]) -> tuple[Callable[[Params, Tensor], Tensor], Params]:
    """f(selected params, x (n, ...)) -> (n, C) with every other parameter and buffer frozen."""
    named = dict(model.named_parameters())
    selected = {k: named[k].detach() for k in names}
    frozen = {k: v.detach() for k, v in named.items() if k not in selected}
    frozen.update(dict(model.named_buffers()))

    def f(p: Params, xs: Tensor) -> Tensor:
        # Products are called long after they are set up: the model's own modes may have changed since.
        with eval_mode(model):
            return functional_call(model, {**frozen, **p}, (xs,))

    return f, selected


def _bytes_per_sample(f: Callable[[Params, Tensor], Tensor], primals: Params, x: Tensor) -> int:
    """Bytes autograd saves per extra sample in one forward, i.e. the per-sample activation size."""
    p = {k: v.detach().requires_grad_() for k, v in primals.items()}
    total, _ = saved_bytes_per_sample(lambda n: f(p, x[:n]))
    return max(total, x[:1].numel() * x.element_size(), 1)


@guarded
def products(
    model: nn.Module,
    x: Tensor,
    *,
    params: list[str] | None = None,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
    max_memory_gb: float | None = None,
) -> Products:
    """The eNTK of ``outputs`` (``entk.core.kernel``) of the selected ``params`` of ``model`` on x (N, ...),
    output weights (C,), set up for ``ntk_matvec``, ``param_matvec`` and ``factor_matvec``.

    ``max_memory_gb`` (default: ``entk.core.memory.resolve_max_memory_gb``) bounds the autograd
    intermediates of one chunk of samples (not the block of vectors itself).
    """
    check_outputs(outputs)
    ref = next(model.parameters())
    x = to_model(model, x)
    c = n_outputs(model, x)
    w = check_weights(output_weights, c)
    w = torch.ones(c, dtype=ref.dtype, device=ref.device) if w is None else w.to(ref)
    f, primals = _functional(model, [k for names in resolve_params(model, params).values() for k in names])
    per_sample = _bytes_per_sample(f, primals, x) + 2 * c * ref.element_size()
    return Products(f, primals, x, w, outputs, per_sample, resolve_max_memory_gb(max_memory_gb) * 2**30)


def _jt(pb: Products, cot: Tensor) -> Params:
    """Jᵀ on output cotangents (s, N, C) -> parameter tangents {name: (s, *shape)}, summed over samples."""
    chunk, total = pb.chunk(cot.shape[0]), None
    for s in range(0, pb.n, chunk):
        _, pullback = vjp(lambda p, xs=pb.x[s : s + chunk]: pb.f(p, xs), pb.primals)
        part = vmap(pullback)(cot[:, s : s + chunk])[0]
        total = part if total is None else {k: total[k] + part[k] for k in part}
    return total


def _j(pb: Products, tangents: Params) -> Tensor:
    """J on parameter tangents {name: (s, *shape)} -> output tangents (s, N, C)."""
    chunk = pb.chunk(next(iter(tangents.values())).shape[0])

    def push(xs: Tensor) -> Callable[[Params], Tensor]:
        return lambda t: jvp(lambda p: pb.f(p, xs), (pb.primals,), (t,))[1]

    return torch.cat([vmap(push(pb.x[s : s + chunk]))(tangents) for s in range(0, pb.n, chunk)], dim=1)


def _jtj(pb: Products, tangents: Params, between: Callable[[Tensor], Tensor]) -> Params:
    """Jᵀ ∘ between ∘ J on parameter tangents {name: (s, *shape)}, one fused pass per chunk of samples."""
    chunk, total = pb.chunk(next(iter(tangents.values())).shape[0]), None
    for s in range(0, pb.n, chunk):
        xs = pb.x[s : s + chunk]
        _, pullback = vjp(lambda p, xs=xs: pb.f(p, xs), pb.primals)

        def one(t: Params, xs: Tensor = xs, pullback: Callable = pullback) -> Params:
            return pullback(between(jvp(lambda p: pb.f(p, xs), (pb.primals,), (t,))[1]))[0]

        part = vmap(one)(tangents)
        total = part if total is None else {k: total[k] + part[k] for k in part}
    return total


def _class_major(y: Tensor) -> Tensor:
    """Output tangents (s, N, C) -> flattened-kernel vectors (C·N, s), row c·N + n."""
    return y.transpose(1, 2).reshape(y.shape[0], -1).T


def _in_sub_blocks(fn: Matvec) -> Matvec:
    """Apply fn to (dim, b) in column blocks of at most SUB_BLOCK."""
    return lambda v: torch.cat([fn(block) for block in v.split(SUB_BLOCK, dim=1)], dim=1)


def _in_model_dtype(pb: Products, fn: Matvec) -> Matvec:
    # The autodiff passes run in the model's dtype and device; the caller's vectors may not.
    ref = next(iter(pb.primals.values()))
    return lambda v: fn(v.to(ref)).to(v)


def ntk_matvec(pb: Products) -> Matvec:
    """V (dim, b) -> K V (dim, b) for the eNTK (dim = C·N class-major, or N), never forming K or J.

    One product costs a vjp and a jvp per vector, C of each for ``diag_mean``.
    """
    n, c, w = pb.n, pb.c, pb.weights

    def jjt(cot: Tensor) -> Tensor:
        return _j(pb, _jt(pb, cot))

    if pb.outputs == "flatten":

        def kv(v: Tensor) -> Tensor:
            cot = v.T.reshape(-1, c, n).transpose(1, 2) * w
            return _class_major(jjt(cot) * w)

    elif pb.outputs == "all_mean":
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

    return _in_model_dtype(pb, _in_sub_blocks(kv))


def _check_param_space(outputs: str) -> None:
    if outputs == "diag_mean":
        raise ValueError(
            "the diag_mean eNTK's factor has C·P columns, so its parameter-side Gram is C times larger "
            "than for 'flatten' or 'all_mean': use ntk_matvec (kernel side) for diag_mean"
        )


def _flat_codec(primals: Params) -> tuple[Callable[[Tensor], Params], Callable[[Params], Tensor]]:
    """(U (P, s) -> {name: (s, *shape)}, and back), parameters in the order of ``primals``."""
    names = list(primals)
    sizes = [primals[k].numel() for k in names]

    def unflatten(u: Tensor) -> Params:
        return {k: t.reshape(-1, *primals[k].shape) for k, t in zip(names, u.T.split(sizes, dim=1), strict=False)}

    def flatten(t: Params) -> Tensor:
        return torch.cat([t[k].reshape(t[k].shape[0], -1) for k in names], dim=1).T

    return unflatten, flatten


def param_matvec(pb: Products) -> Matvec:
    """U (P, b) -> Fᵀ F U (P, b): the eNTK's Gram on the parameter side (P = ``pb.n_params``), for ``flatten``
    and ``all_mean``.

    Its nonzero eigenvalues are the eNTK's; ``kernel_vectors`` maps its eigenvectors u to the
    kernel's, F u / √λ. Parameters are stacked in ``model.named_parameters()`` order.
    """
    _check_param_space(pb.outputs)
    w, c = pb.weights, pb.c
    unflatten, flatten = _flat_codec(pb.primals)
    if pb.outputs == "flatten":
        w2 = w * w

        def between(y: Tensor) -> Tensor:
            return y * w2

    else:

        def between(y: Tensor) -> Tensor:
            return (y * w).sum(-1, keepdim=True) * (w / c**2)

    return _in_model_dtype(pb, _in_sub_blocks(lambda u: flatten(_jtj(pb, unflatten(u), between))))


def factor_matvec(pb: Products) -> Matvec:
    """U (P, b) -> F U (dim, b): the eNTK's factor on parameter vectors (dim = C·N class-major, or N)."""
    _check_param_space(pb.outputs)
    unflatten, _ = _flat_codec(pb.primals)

    def fu(u: Tensor) -> Tensor:
        y = _j(pb, unflatten(u)) * pb.weights
        return _class_major(y) if pb.outputs == "flatten" else y.sum(-1).T / pb.c

    return _in_model_dtype(pb, _in_sub_blocks(fu))


def kernel_vectors(pb: Products, u: Tensor) -> Tensor:
    """The kernel's unit eigenvectors (dim, k), signs fixed, from those of ``param_matvec``'s Gram u (P, k)."""
    return fix_signs(unit_columns(factor_matvec(pb)(u)))
