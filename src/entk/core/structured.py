"""The structured path: each parameter's kernel from its uses' factors, never a per-sample Jacobian
by autograd.

For a use (``entk.core.rules.base.Use``) with act rows U_n (T, a) and output gradients G_nc (T, g) =
∂(Σ_m f_c(x_m))/∂(use output) at sample n, the per-sample Jacobian on the use's matrix is
J_nc = Σ_t G_nct ⊗ U_nt, so for a parameter with one use

    K_cd[n, m] = Σ_{t,s} (U_nt · U_ms) (G_nct · G_mds).

G takes one backward pass per class over a chunk of samples (one in all for ``all_mean``). Each
output mode reduces G to rows H (flatten: G; all_mean: the weighted class mean; diag_mean:
[G_1 … G_C]/√C, compressed by ``entk.core.compression``), and the kernel is either the factor
Σ_t H_at ⊗ U_at when it is no wider than the kernel, or dense, built in symmetric blocks from those
Jacobian rows or position pair by position pair, whichever costs less.

A parameter with several uses (shared weights: TMS's W and Wᵀ, a tied embedding and readout, a
block applied twice), or one whose matrix repeats a coordinate, has the sum of its uses' Jacobians:
its rows are scattered onto the parameter's coordinates and added, which is exactly where the cross
terms come from, and its kernel is formed from those rows (a factor, or dense in symmetric blocks).

Memory: samples go in chunks and the dense kernel in blocks, both sized to the working-memory
budget (``entk.core.memory``); what is held whole is the kernels and each parameter's act sides and
reduced rows. Samples must not interact inside the forward pass (no batch norm in training mode).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from entk.core import compression
from entk.core.kernel import Kernel, fill_symmetric, zeros
from entk.core.memory import block_rows
from entk.core.rules.base import Use, act_gram, outer_rows
from entk.core.trace import traced_forward

# Below this many flops of one class's backward pass over a chunk, its fixed cost dominates.
REPLICATE_FLOPS = 5e7
# Up to this many ids a lookup's dense kernel is assembled id by id (``id_groups``).
MAX_GROUPED_IDS = 4096


@dataclass
class Factors:
    """One use's factors over all samples: act side (N, T, a) or ids (N, T), reduced gradient rows
    h (flatten (C·N, T, g); all_mean (N, T, g); diag_mean (N, T, w) or, for a shared parameter,
    plain (N, T, C, g)), and the use (its matrix ``pos`` and sides) from the probe."""

    act: Tensor
    h: Tensor
    use: Use


def _sides(use: Use) -> tuple[int, int, int]:
    """(positions T, gradient width g, act width a) of a use, per sample."""
    g = use.pos.shape[0] if use.grad_rows else use.pos.shape[1]
    return use.act.shape[1], g, use.act_dim if use.act.is_floating_point() else 1


def _simple(uses: list[Use], numel: int) -> bool:
    """A single use whose matrix holds every coordinate once: its rows need no scattering."""
    if len(uses) != 1 or uses[0].pos.numel() != numel:
        return False
    pos = uses[0].pos
    every = torch.arange(numel, device=pos.device)
    # The parameter itself or its transpose (the usual cases) need no sort.
    if torch.equal(pos.flatten(), every) or torch.equal(pos.T.flatten(), every):
        return True
    return bool(torch.equal(pos.flatten().sort().values, every))


def use_blocks(probe: list[Use], simple: set[str], atom_of: dict[str, int]) -> list[list[int]]:
    """Indices of the probe's uses computed as one: ``simple`` parameters (``_simple``) of one atom that
    read the same output gradient (a layer's weight and bias) share it, their act sides side by side;
    every other use is a block of its own."""
    found: dict[tuple, list[int]] = {}
    for i, u in enumerate(probe):
        shares = u.name in simple and u.grad_rows and u.grad_key is not None and u.act.is_floating_point()
        key = (id(u.out), u.grad_key, atom_of[u.name]) if shares else ("own", i)
        found.setdefault(key, []).append(i)
    return list(found.values())


def _merged(uses: list[Use], block: list[int]) -> Use:
    """One use standing for a block: the first's gradient side, every act side side by side."""
    if len(block) == 1:
        return uses[block[0]]
    act = torch.cat([uses[i].act for i in block], dim=2)
    return dataclasses.replace(uses[block[0]], act=act, act_dim=act.shape[2])


def _class_grads(f: Tensor, outs: list[Tensor], weights: Tensor | None, mean: bool) -> Iterator[list[Tensor | None]]:
    """Per class c: ∂(w_c Σ_n f_c(x_n))/∂out for each out, one backward each; for ``mean`` one backward
    of (1/C) Σ_c w_c Σ_n f_c(x_n). Samples are independent, so one gradient holds every sample's."""
    n, c = f.shape
    w = torch.ones(c, dtype=f.dtype, device=f.device) if weights is None else weights.to(f)
    if mean:
        yield list(torch.autograd.grad((f * w).sum() / c, outs, allow_unused=True))
        return
    for k in range(c):
        # A scalar loss: explicit grad_outputs would import sympy on first use, seconds per process.
        yield list(torch.autograd.grad(f[:, k].sum() * w[k], outs, retain_graph=k < c - 1, allow_unused=True))


def chunk_forward(
    model: nn.Module, xb: Tensor, params: dict[str, Tensor], signatures: list, blocks: list[list[int]]
) -> tuple[Tensor, list[Use]]:
    """Forward pass on samples xb: outputs (n, C) and one use per block of use indices (``use_blocks``); the
    uses of ``params`` must match the probe's ``signatures``."""
    f, tracer = traced_forward(model, xb, params)
    uses = [u for u in tracer.uses if u.name in params]
    if [u.signature() for u in uses] != signatures:
        raise RuntimeError("a parameter was used differently than on the probe samples")
    return f, [_merged(uses, b) for b in blocks]


def _distinct(uses: list[Use]) -> tuple[list[Tensor], list[int]]:
    outs: dict[int, int] = {}
    for u in uses:
        outs.setdefault(id(u.out), len(outs))
    return list({id(u.out): u.out for u in uses}.values()), [outs[id(u.out)] for u in uses]


def chunk_grads(f: Tensor, uses: list[Use], weights: Tensor | None, mean: bool) -> list[Tensor]:
    """Gradient sides per use, (C, n, T, g) (C = 1 for ``mean``), from one backward pass per class."""
    outs, which = _distinct(uses)
    sides = [_sides(u) for u in uses]
    classes = 1 if mean else f.shape[1]
    g_all = [f.new_zeros(classes, f.shape[0], t, g) for t, g, _ in sides]
    for k, grads in enumerate(_class_grads(f, outs, weights, mean)):
        for i, u in enumerate(uses):
            if grads[which[i]] is not None:
                g_all[i][k] = u.to_grad(grads[which[i]])
    return g_all


def replicated_grads(
    model: nn.Module,
    xb: Tensor,
    params: dict[str, Tensor],
    signatures: list,
    blocks: list[list[int]],
    weights: Tensor | None,
    c: int,
) -> tuple[list[Use], list[Tensor]]:
    """Blocks' uses on xb (n samples) and gradient sides (C, n, T, g), from one backward pass: the chunk
    repeated once per class, class-major, copy k differentiating output k. Samples are independent,
    so this is C passes' worth of gradients for the cost of one pass over C·n rows (worth it where a
    pass is small and its overhead would dominate)."""
    n = xb.shape[0]
    f, uses = chunk_forward(model, xb.repeat(c, *[1] * (xb.ndim - 1)), params, signatures, blocks)
    w = torch.ones(c, dtype=f.dtype, device=f.device) if weights is None else weights.to(f)
    mask = torch.diag(w)[:, None, :].expand(c, n, c).reshape(c * n, c)
    outs, which = _distinct(uses)
    grads = torch.autograd.grad((f * mask).sum(), outs, allow_unused=True)
    g_all = []
    for i, u in enumerate(uses):
        t, g, _ = _sides(u)
        got = grads[which[i]]
        g_all.append(f.new_zeros(c, n, t, g) if got is None else u.to_grad(got).reshape(c, n, t, g))
    return [dataclasses.replace(u, act=u.act[:n]) for u in uses], g_all


def chunk_projections(f: Tensor, uses: list[Use], weights: Tensor | None, bases: list[Tensor]) -> list[tuple]:
    """Like ``chunk_grads`` for diag_mean with known bases, class by class, G never stored:
    per use (energies ‖R_j‖²_F (g,), rows R_jᵀ V_j (n·T, g, k))."""
    outs, which = _distinct(uses)
    acc = []
    for u, basis in zip(uses, bases, strict=True):
        t, g, _ = _sides(u)
        acc.append((f.new_zeros(g), f.new_zeros(f.shape[0] * t, g, basis.shape[2])))
    for k, grads in enumerate(_class_grads(f, outs, weights, False)):
        for i, u in enumerate(uses):
            if grads[which[i]] is not None:
                compression.project_class(*acc[i], u.to_grad(grads[which[i]]).flatten(0, 1), bases[i][:, k, :])
    return acc


def factors(
    model: nn.Module,
    x: Tensor,
    params: dict[str, Tensor],
    probe: list[Use],
    weights: Tensor | None,
    outputs: str,
    n_outputs: int,
    budget: int,
    blocks: list[list[int]],
    simple: set[str],
) -> list[Factors]:
    """Every block's factors (``use_blocks``), computed over chunks of samples that fit the budget; only
    ``simple`` parameters' rows can be compressed."""
    merged = [_merged(probe, b) for b in blocks]
    dtype = next(iter(params.values())).dtype
    elem = torch.empty(0, dtype=dtype).element_size()
    sides = [_sides(u) for u in merged]
    per_sample = sum(t * (3 * n_outputs * g + a) for t, g, a in sides)
    chunk = max(1, budget // (elem * max(per_sample, 1)))
    compressible = [outputs == "diag_mean" and u.name in simple and n_outputs > 1 for u in merged]
    # A small first chunk finds the diag_mean bases (the one step that forms Grams), and later
    # chunks mostly only project onto them.
    first = min(chunk, 2 * n_outputs) if any(compressible) else chunk
    starts = [0, *range(first, x.shape[0], chunk)]
    ends = [*starts[1:], x.shape[0]]
    signatures = [u.signature() for u in probe]
    acts: list[list[Tensor]] = [[] for _ in merged]
    hs: list[list[Tensor]] = [[] for _ in merged]
    bases = [
        x.new_zeros(_sides(u)[1], n_outputs, 0, dtype=dtype) if ok else None
        for u, ok in zip(merged, compressible, strict=True)
    ]
    # One backward pass per class has a fixed cost; where a pass is this small, one pass over the chunk
    # repeated per class (``replicated_grads``, whose activations hold C copies) is cheaper.
    flops = 2 * sum(t * g * a for t, g, a in sides)
    copies = 2 * n_outputs * sum(t * (g + a) for t, g, a in sides)
    for start, end in zip(starts, ends, strict=True):
        xb = x[start:end]
        if all(compressible) and all(b is not None and b.shape[2] for b in bases):
            f, uses = chunk_forward(model, xb, params, signatures, blocks)
            # Known bases: project class by class; a chunk that leaves them is redone with its G.
            streamed = chunk_projections(f, uses, weights, bases)
            if not any(compression.growing(e, r, n_outputs).any() for e, r in streamed):
                for i, (u, (_, r)) in enumerate(zip(uses, streamed, strict=True)):
                    acts[i].append(u.act)
                    hs[i].append(r.reshape(u.act.shape[0], u.act.shape[1], *r.shape[1:]))
                continue
        nb = end - start
        small = nb * flops < REPLICATE_FLOPS and nb * (per_sample + copies) * elem <= budget
        if small and outputs != "all_mean" and n_outputs > 1:
            uses, g_list = replicated_grads(model, xb, params, signatures, blocks, weights, n_outputs)
        else:
            f, uses = chunk_forward(model, xb, params, signatures, blocks)
            g_list = chunk_grads(f, uses, weights, outputs == "all_mean")
        for i, (u, g) in enumerate(zip(uses, g_list, strict=True)):
            acts[i].append(u.act)
            if outputs == "flatten":
                hs[i].append(g)
            elif outputs == "all_mean":
                hs[i].append(g[0])
            elif compressible[i]:
                hs[i], bases[i] = compression.diag_mean_step(hs[i], bases[i], g)
            else:
                hs[i].append(g.permute(1, 2, 0, 3))
    result = []
    for i, u in enumerate(merged):
        if outputs == "flatten":
            h = torch.cat(hs[i], dim=1).flatten(0, 1)
        elif outputs == "all_mean" or not compressible[i]:
            h = torch.cat(hs[i])
        else:
            h = compression.join_rows(hs[i], bases[i])
        if outputs == "diag_mean":
            h = h / math.sqrt(n_outputs)
        result.append(Factors(torch.cat(acts[i]), h, u))
    return result


# --- From factors to a kernel ---


def _live(hs: list[Tensor], dim: int) -> Tensor | None:
    """Kernel rows where some gradient side is nonzero, or None where nearly all are: a row whose
    gradients all vanish (an output behind a ReLU that is off) is a zero row of every factor."""
    live = torch.zeros(dim, dtype=torch.bool, device=hs[0].device)
    for h in hs:
        live |= h.reshape(dim, -1).ne(0).any(dim=1)
    count = int(live.sum())
    return None if count > 0.9 * dim else live.nonzero().squeeze(1)


def _factor(rows, hs: list[Tensor], dim: int, width: int, per_row: float, elems: int) -> tuple[Tensor, Tensor | None]:
    """A factor (dim, width) filled block by block with rows(index tensor), skipping rows known to be
    zero, and the rows that may be nonzero (None: any)."""
    live = _live(hs, dim)
    f = hs[0].new_empty(dim, width) if live is None else zeros(dim, width, hs[0])
    index = torch.arange(dim, device=f.device) if live is None else live
    for part in index.split(block_rows(elems, per_row, 0, dim)):
        f[part] = rows(part)
    return f, live


def single_use_kernel(fac: Factors, n: int, c: int, outputs: str, budget: int) -> Kernel:
    """A single-use parameter's kernel: rows Σ_t h ⊗ u if no wider than the kernel, else dense."""
    u, h, d_in = fac.act, fac.h, fac.use.act_dim
    if h.shape[2] * d_in > h.shape[0] and h.shape[2] <= 2048:
        # A rank ≤ dim / d_in would make the factor form possible: worth one (w, w) Gram to find out.
        h = compression.compress_width(h, h.shape[0] // d_in)
    dim, t, w = h.shape
    width, elems = w * d_in, budget // h.element_size()

    def u_rows(a: slice | Tensor) -> Tensor:
        # flatten rows are (class, sample) pairs, class-major.
        if u.shape[0] == dim:
            return u[a]
        return u[(a if isinstance(a, Tensor) else torch.arange(a.start, a.stop, device=u.device)) % n]

    def jac(a: slice | Tensor) -> Tensor:
        return outer_rows(u_rows(a), h[a], d_in)

    if width <= dim:
        f, live = _factor(jac, [h], dim, width, 3 * width + t * (d_in + w), elems)
        return Kernel("factor", f, n, c, outputs, live)
    if not u.is_floating_point() and d_in <= MAX_GROUPED_IDS and dim * width <= elems:
        return Kernel("dense", id_groups(u_rows(slice(0, dim)), h, d_in), n, c, outputs)
    u_width = d_in if u.is_floating_point() else 1
    if width <= t * t * (u_width + w):
        block = block_rows(elems, 3 * width + 2 * t * (d_in + w), 2, dim)
        return Kernel("dense", fill_symmetric(dim, h, jac, lambda p, q: p @ q.T, block), n, c, outputs)

    def position_pairs(p: tuple[Tensor, Tensor], q: tuple[Tensor, Tensor]) -> Tensor:
        # One (t, s) pair at a time: each product is a plain (rows_a, rows_b) matrix, never the
        # (rows_a·T, rows_b·T) one that would have to be summed over a strided view.
        # On a diagonal block the (j, i) product is the (i, j) one transposed.
        same, out = p is q, None
        for i in range(t):
            for j in range(i if p is q else 0, t):
                prod = act_gram(p[0][:, i : i + 1], q[0][:, j : j + 1], h.dtype).mul_(p[1][:, i] @ q[1][:, j].T)
                if same and j != i:
                    prod += prod.T.clone()
                out = prod if out is None else out.add_(prod)
        return out

    block = block_rows(elems, 2 * t * (u_width + w), 3, dim)
    pairs = fill_symmetric(dim, h, lambda a: (u_rows(a), h[a]), position_pairs, block)
    return Kernel("dense", pairs, n, c, outputs)


def id_groups(ids: Tensor, h: Tensor, vocab: int) -> Tensor:
    """Dense K = Σ_v S_v S_vᵀ of a lookup use, S_v[r] = Σ_t [ids_rt = v] h_rt: one product per id over
    the rows that hold it (most ids sit in few rows, so this is far less than all pairs of rows)."""
    dim, _, w = h.shape
    s = outer_rows(ids, h, vocab, grad_rows=False).view(dim, vocab, w)
    k = h.new_zeros(dim, dim)
    present = s.ne(0).any(dim=2)
    for v in present.any(dim=0).nonzero().squeeze(1).tolist():
        r = present[:, v].nonzero().squeeze(1)
        sv = s[r, v]
        k.index_put_((r[:, None], r[None, :]), sv @ sv.T, accumulate=True)
    return k


def shared_kernel(facs: list[Factors], numel: int, n: int, c: int, outputs: str, budget: int) -> Kernel:
    """A parameter's kernel from several uses (or one that repeats coordinates): each use's Jacobian
    rows scattered onto the parameter's coordinates and summed, so the cross terms are exact."""
    classes = c if outputs == "diag_mean" else 1
    dim = facs[0].h.shape[0]
    width = classes * numel

    def rows(a: slice | Tensor) -> Tensor:
        index = a if isinstance(a, Tensor) else torch.arange(a.start, a.stop, device=facs[0].h.device)
        out = facs[0].h.new_zeros(len(index), width)
        for fac in facs:
            act = fac.act[index] if fac.act.shape[0] == dim else fac.act[index % n]
            pos = fac.use.pos.flatten()
            for k in range(classes):
                h = fac.h[index, :, k] if outputs == "diag_mean" else fac.h[index]
                out.index_add_(1, pos + k * numel, outer_rows(act, h, fac.use.act_dim, fac.use.grad_rows))
        return out

    per_row = 2 * width + sum(fac.h[0].numel() + fac.act[0].numel() for fac in facs)
    if width <= dim:
        f, live = _factor(rows, [fac.h for fac in facs], dim, width, per_row, budget // facs[0].h.element_size())
        return Kernel("factor", f, n, c, outputs, live)
    block = block_rows(budget // facs[0].h.element_size(), 2 * per_row, 2, dim)
    return Kernel("dense", fill_symmetric(dim, facs[0].h, rows, lambda p, q: p @ q.T, block), n, c, outputs)


def kernels(
    model: nn.Module,
    x: Tensor,
    names: list[str],
    probe: list[Use],
    weights: Tensor | None,
    outputs: str,
    n_outputs: int,
    budget: int,
    atom_of: dict[str, int] | None = None,
) -> dict[tuple[str, ...], Kernel]:
    """{parameters: their exact compact kernel} for the structured parameters ``names``, one pass for
    all; parameters of one atom (``atom_of``, default each its own) that share an output gradient
    come as one kernel."""
    named = dict(model.named_parameters())
    params = {nm: named[nm] for nm in names}
    probe = [u for u in probe if u.name in params]
    atom_of = {nm: i for i, nm in enumerate(names)} if atom_of is None else atom_of
    simple = {nm for nm, p in params.items() if _simple([u for u in probe if u.name == nm], p.numel())}
    blocks = use_blocks(probe, simple, atom_of)
    facs = factors(model, x, params, probe, weights, outputs, n_outputs, budget, blocks, simple)
    n = x.shape[0]
    result = {}
    for nm in names:
        own = [(b, fac) for b, fac in zip(blocks, facs, strict=True) if probe[b[0]].name == nm]
        if nm in simple and own:
            ((block, fac),) = own
            result[tuple(probe[i].name for i in block)] = single_use_kernel(fac, n, n_outputs, outputs, budget)
        elif own:
            result[(nm,)] = shared_kernel([fac for _, fac in own], params[nm].numel(), n, n_outputs, outputs, budget)
    return result
