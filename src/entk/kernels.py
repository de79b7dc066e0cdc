"""Empirical NTK of any ``torch.nn.Module`` mapping x (N, ...) to f (N, C).

Notation (docs/spec.md, "Notation"): K[(n,c),(m,d)] = ∂f_c(x_n)/∂θ · ∂f_d(x_m)/∂θ = J Jᵀ with
J of shape (C·N, P), ordered class-major (row c·N + n). Every output reduction keeps the form
K = F Fᵀ for some factor F, which is what lets ``top_eigenpairs`` work on the smaller side:

- ``flatten``   : F = J                                   (C·N, P)
- ``diag_mean`` : F = [J_1 … J_C] / √C                    (N, C·P),  K = (1/C) Σ_c K_cc
- ``all_mean``  : F = (1/C) Σ_c J_c                       (N, P),    K = (1/C²) Σ_{c,d} K_cd

A factor's columns need not be parameters: any F with K = F Fᵀ is exact.

Structured path. ``nn.Linear`` (inputs (N, L…, in)), ``nn.Embedding`` and ``nn.Conv1d``/``Conv2d``
(groups 1) factor per sample: with U_n (T, d_in) the layer's input rows (Linear positions, one-hot
tokens, or im2col patches; a column of ones for a bias) and G_nc (T, out) = ∂(Σ_m f_c(x_m))/∂(layer
output) at sample n, the per-sample Jacobian is J_nc = G_ncᵀ U_n, so

    K_cd[n, m] = Σ_{t,s} (U_nt · U_ms) (G_nct · G_mds).

G takes one backward pass per class over a chunk of samples, never autograd per sample. Each output
mode reduces G to rows H (flatten: G; all_mean: mean_c G; diag_mean: [G_1 … G_C]/√C), and the kernel
is either the factor Σ_t H_at ⊗ U_at when it is no wider than the kernel, or dense, built in
symmetric blocks from those Jacobian rows or position pair by position pair, whichever costs less.

diag_mean compression: for each output unit j the (C, N·T) slice R_j = G[:, :, :, j] often has tiny
rank (rank 1 when the layer feeds an elementwise activation and then a linear readout). With V_j an
orthonormal basis of its column space, R_jᵀ R_j = (R_jᵀ V_j)(R_jᵀ V_j)ᵀ, so H's C·out columns become
Σ_j rank(R_j) columns (kept only while that is at most half of C·out). The bases come from the
per-unit C×C Grams of a small first chunk (pivoted Gram-Schmidt, no eigensolver); later chunks are
projected onto them class by class as the backward passes come, without storing their G, and are
redone with G only if their residual outside the bases is above round-off (max(C, 10)·eps
relative), which grows the bases. A layer whose rows then have a small overall rank (a readout) is
compressed once more, to a factor, when that rank makes the factor no wider than the kernel.

Memory: samples go in chunks and the dense kernel in blocks, both sized to ``max_memory_gb`` of
working memory; what is held whole is the kernels themselves and each layer's U and reduced H.

A structured layer must be called once per forward with the sample index leading its input and
output, and its factors must reproduce autograd's parameter gradients on two probe samples (which
rules out tied weights, subclasses with another forward, output-changing hooks); any other layer
takes the ``torch.func`` path. Both paths assume samples do not interact inside the forward pass
(no batch norm).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from entk.checks import guarded

OUTPUT_MODES = ("flatten", "diag_mean", "all_mean")

# Working memory for chunks of samples and blocks of kernel when the caller sets none.
# One memory rule for the whole library: the keyword, else $ENTK_MAX_MEMORY_GB, else 4 GB.
DEFAULT_MAX_MEMORY_GB = 4.0
MAX_MEMORY_ENV = "ENTK_MAX_MEMORY_GB"


@dataclass(frozen=True)
class Kernel:
    """An eNTK in its most compact exact form: ``dense`` (dim, dim) or ``factor`` F (dim, r), K = F Fᵀ."""

    kind: Literal["dense", "factor"]
    data: Tensor
    n_samples: int
    n_outputs: int
    outputs: str

    @property
    def dim(self) -> int:
        """Side length of the kernel: C·N for ``flatten``, N otherwise."""
        return self.data.shape[0]

    def dense(self) -> Tensor:
        """The kernel as a dense (dim, dim) matrix."""
        return self.data if self.kind == "dense" else self.data @ self.data.T

    def __add__(self, other: Kernel) -> Kernel:
        if (self.dim, self.outputs) != (other.dim, other.outputs):
            raise ValueError("kernels of different shapes or output modes cannot be added")
        if self.kind == other.kind == "factor" and self.data.shape[1] + other.data.shape[1] <= self.dim:
            return _replace(self, "factor", torch.cat([self.data, other.data], dim=1))
        if self.kind == "factor" and other.kind == "dense":
            return other + self
        if other.kind == "dense":
            return _replace(self, "dense", self.data + other.data)
        # One fused product-and-add: a single new (dim, dim) matrix rather than three.
        return _replace(self, "dense", torch.addmm(self.dense(), other.data, other.data.T))

    def scale_outputs(self, weights: Tensor) -> Kernel:
        """K → D K D with D = diag(w_c) repeated over samples; exact only for ``flatten`` kernels."""
        if self.outputs != "flatten":
            raise ValueError(
                f"output weights can be applied after the fact only to a 'flatten' kernel, not "
                f"'{self.outputs}': pass output_weights when computing the kernel instead"
            )
        w = _check_weights(weights, self.n_outputs).to(self.data).repeat_interleave(self.n_samples)
        if self.kind == "factor":
            return _replace(self, "factor", w[:, None] * self.data)
        return _replace(self, "dense", w[:, None] * self.data * w[None, :])

    def to(self, device: torch.device | str) -> Kernel:
        """The same kernel with its data on ``device``."""
        return _replace(self, self.kind, self.data.to(device))

    def to_numpy_dict(self) -> dict:
        """Arrays and metadata for ``np.savez``."""
        return {
            "kind": self.kind,
            "data": self.data.detach().cpu().numpy(),
            "n_samples": self.n_samples,
            "n_outputs": self.n_outputs,
            "outputs": self.outputs,
        }

    @classmethod
    def from_numpy_dict(cls, d) -> Kernel:
        """Inverse of ``to_numpy_dict`` (accepts an ``np.load`` result)."""
        return cls(
            kind=str(d["kind"]),
            data=torch.from_numpy(d["data"]),
            n_samples=int(d["n_samples"]),
            n_outputs=int(d["n_outputs"]),
            outputs=str(d["outputs"]),
        )


def _replace(k: Kernel, kind: str, data: Tensor) -> Kernel:
    return Kernel(kind, data, k.n_samples, k.n_outputs, k.outputs)


def _check_weights(weights: Tensor | None, n_outputs: int) -> Tensor | None:
    if weights is None:
        return None
    weights = torch.as_tensor(weights)
    if weights.shape != (n_outputs,):
        raise ValueError(
            f"output_weights must have shape ({n_outputs},), one weight per model output, got {tuple(weights.shape)}"
        )
    return weights


def resolve_max_memory_gb(max_memory_gb: float | None) -> float:
    """The memory budget in GB: the keyword, else $ENTK_MAX_MEMORY_GB, else 4."""
    value = max_memory_gb if max_memory_gb is not None else float(os.environ.get(MAX_MEMORY_ENV, DEFAULT_MAX_MEMORY_GB))
    if not value > 0:
        raise ValueError(f"max_memory_gb must be positive, got {value}")
    return value


def _budget_bytes(max_memory_gb: float | None) -> int:
    """Working-memory budget in bytes (``resolve_max_memory_gb``)."""
    return int(resolve_max_memory_gb(max_memory_gb) * 2**30)


def resolve_params(model: nn.Module, params: list[str] | None) -> dict[str, list[str]]:
    """Selected parameter names grouped by the module that directly owns them ('' = root)."""
    all_params = dict(model.named_parameters())
    if params is None:
        selected = list(all_params)
    else:
        if isinstance(params, str):
            raise ValueError(f"params must be a list of names, got the string {params!r}: wrap it in a list")
        modules = dict(model.named_modules())
        selected = []
        for name in params:
            if name in all_params:
                selected.append(name)
            elif name in modules and name != "":
                selected += [f"{name}.{p}" for p, _ in modules[name].named_parameters()]
            else:
                raise ValueError(
                    f"unknown parameter or module name {name!r}; parameters: {sorted(all_params)}, "
                    f"modules: {sorted(m for m in modules if m)}"
                )
        selected = list(dict.fromkeys(selected))
    if not selected:
        raise ValueError("no parameters selected: the model has none or params is empty")
    groups: dict[str, list[str]] = {}
    for name in selected:
        groups.setdefault(name.rpartition(".")[0], []).append(name)
    return groups


def _forward_checked(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"the model must map x of shape (N, ...) to outputs (N, C); got {tuple(out.shape)} for N = "
            f"{x.shape[0]}: reshape or select the outputs in a wrapper module"
        )
    return out


# --- Structured layers: per-sample factors U_n (T, d_in) and G_nc (T, out), J_nc = G_ncᵀ U_n ---


@dataclass(frozen=True)
class _Site:
    """A structured layer, its selected parameters, and its sizes per sample (set by the probe)."""

    module: nn.Module
    use_weight: bool
    use_bias: bool
    positions: int = 0
    out: int = 0
    d_in: int = 0


@dataclass(frozen=True)
class _Factors:
    """A layer's factors: u (N, T, d_in) or tokens (N, T) over d_in ids; rows h (dim, T, w)."""

    u: Tensor
    h: Tensor
    d_in: int


def _structured_kind(module: nn.Module, names: set[str]) -> bool:
    """Whether these selected parameters (local names) of the module have per-sample factors."""
    if isinstance(module, nn.Embedding):
        # max_norm renormalises the weight in place and scale_grad_by_freq depends on the batch.
        return names == {"weight"} and module.max_norm is None and not module.scale_grad_by_freq
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return module.groups == 1 and names <= {"weight", "bias"}
    return isinstance(module, nn.Linear) and names <= {"weight", "bias"}


def _conv_padding(conv: nn.Conv1d | nn.Conv2d) -> list[tuple[int, int]]:
    """(left, right) padding per spatial dimension, as the layer applies it."""
    if conv.padding == "valid":
        return [(0, 0)] * len(conv.kernel_size)
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=False)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in conv.padding]


def _conv_patches(conv: nn.Conv1d | nn.Conv2d, inp: Tensor) -> Tensor:
    """im2col patches (n, positions, in·k) of a Conv1d/Conv2d input (n, in, *spatial)."""
    pads = [p for pair in reversed(_conv_padding(conv)) for p in pair]
    x = F.pad(inp, pads, mode="constant" if conv.padding_mode == "zeros" else conv.padding_mode)
    k, s, d = conv.kernel_size, conv.stride, conv.dilation
    if x.ndim == 3:
        x, k, s, d = x.unsqueeze(2), (1, *k), (1, *s), (1, *d)
    return F.unfold(x, k, dilation=d, stride=s).transpose(1, 2)


def _input_factors(site: _Site, inp: Tensor) -> Tensor:
    """U (n, T, d_in): input rows or patches (+ a ones column for a bias); tokens (n, T) for Embedding."""
    n = inp.shape[0]
    if isinstance(site.module, nn.Embedding):
        tokens = inp.reshape(n, -1)
        pad = site.module.padding_idx
        # The padding row never receives a gradient: its tokens count as no token (-1).
        return tokens if pad is None else tokens.masked_fill(tokens == pad, -1)
    inp = inp.detach()
    u = inp.reshape(n, -1, inp.shape[-1]) if isinstance(site.module, nn.Linear) else _conv_patches(site.module, inp)
    parts = [u] if site.use_weight else []
    if site.use_bias:
        parts.append(u.new_ones(n, u.shape[1], 1))
    return torch.cat(parts, dim=2)


def _output_grads(module: nn.Module, grad: Tensor, n: int) -> Tensor:
    """A gradient w.r.t. the layer output as (n, T, out)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return grad.flatten(2).transpose(1, 2)
    return grad.reshape(n, -1, grad.shape[-1])


def _jacobian_rows(u: Tensor, h: Tensor, d_in: int) -> Tensor:
    """Rows Σ_t h_t ⊗ u_t (rows, w·d_in) from u (rows, T, d_in) or tokens (rows, T) and h (rows, T, w)."""
    if u.is_floating_point():
        return torch.einsum("ntw,nti->nwi", h, u).flatten(1)
    rows, t, w = h.shape
    valid = (u >= 0).flatten()
    slot = (torch.arange(rows, device=u.device)[:, None] * d_in + u).flatten()[valid]
    jac = h.new_zeros(rows * d_in, w).index_add_(0, slot, h.reshape(rows * t, w)[valid])
    return jac.view(rows, d_in * w)


def _u_gram(ua: Tensor, ub: Tensor, dtype: torch.dtype) -> Tensor:
    """Products u_at · u_bs (rows_a·T, rows_b·T); for tokens, 1 where the ids agree."""
    if ua.is_floating_point():
        return ua.flatten(0, 1) @ ub.flatten(0, 1).T
    ta, tb = ua.flatten()[:, None], ub.flatten()[None, :]
    return ((ta == tb) & (ta >= 0)).to(dtype)


def _param_grad_flat(site: _Site, grads: list[Tensor]) -> Tensor:
    """Autograd's gradients of the selected parameters, flattened in ``_jacobian_rows``'s layout."""
    if isinstance(site.module, nn.Embedding):
        return grads[0].flatten()
    parts = ([grads[0].flatten(1)] if site.use_weight else []) + ([grads[-1][:, None]] if site.use_bias else [])
    return torch.cat(parts, dim=1).flatten()


def _selected(site: _Site) -> list[Tensor]:
    return ([site.module.weight] if site.use_weight else []) + ([site.module.bias] if site.use_bias else [])


def _record_calls(
    model: nn.Module, x: Tensor, modules: dict[str, nn.Module]
) -> tuple[Tensor, dict[str, list[tuple[Tensor | None, Tensor]]]]:
    """Forward pass with gradients on: outputs (n, C) and each module's (input, output) per call."""
    calls: dict[str, list] = {m: [] for m in modules}
    hooks = [
        mod.register_forward_hook(lambda _, inp, out, m=m: calls[m].append((inp[0] if inp else None, out)))
        for m, mod in modules.items()
    ]
    try:
        with torch.enable_grad():
            f = _forward_checked(model, x)
    finally:
        for h in hooks:
            h.remove()
    return f, calls


def _per_sample(one: list, two: list, k: int) -> bool:
    """Called once per forward, with the sample index leading its input and output (1 vs k samples)."""
    if len(one) != 1 or len(two) != 1 or one[0][0] is None or two[0][0] is None:
        return False
    (i1, o1), (i2, o2) = one[0], two[0]
    return (
        isinstance(o2, Tensor)
        and o2.requires_grad
        and (i1.shape[0], o1.shape[0], i2.shape[0], o2.shape[0]) == (1, 1, k, k)
        and (i1.shape[1:], o1.shape[1:]) == (i2.shape[1:], o2.shape[1:])
    )


def _eligible_sites(model: nn.Module, x: Tensor, groups: dict[str, list[str]]) -> dict[str, _Site]:
    """Structured layers of ``groups`` whose factors reproduce autograd's gradients on ≤ 2 samples."""
    modules = dict(model.named_modules())
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    sites = {}
    for m, names in groups.items():
        local = {n.rpartition(".")[2] for n in names}
        site = _Site(modules[m], "weight" in local, "bias" in local)
        # A tied parameter has uses the layer's factors do not see; a frozen one has no gradient to check.
        if _structured_kind(modules[m], local) and all(uses[id(p)] == 1 and p.requires_grad for p in _selected(site)):
            sites[m] = site
    if not sites:
        return {}
    k = min(2, x.shape[0])
    _, one = _record_calls(model, x[:1], {m: s.module for m, s in sites.items()})
    f, two = _record_calls(model, x[:k], {m: s.module for m, s in sites.items()})
    sites = {m: s for m, s in sites.items() if _per_sample(one[m], two[m], k)}
    if not sites:
        return {}
    # A forward that is not the plain layer (a subclass, a hook, the weight also used directly) shows
    # up as gradients that the factors do not reproduce.
    cot = torch.randn(f.shape, generator=torch.Generator().manual_seed(0), dtype=f.dtype).to(f.device)
    params = [p for s in sites.values() for p in _selected(s)]
    outs = [two[m][0][1] for m in sites]
    grads = torch.autograd.grad((f * cot).sum(), outs + params, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(outs + params, grads, strict=False)]
    tol = math.sqrt(torch.finfo(f.dtype).eps)
    eligible, at = {}, len(outs)
    for i, (m, s) in enumerate(sites.items()):
        u = _input_factors(s, two[m][0][0])
        g = _output_grads(s.module, grads[i], k)
        d_in = s.module.num_embeddings if isinstance(s.module, nn.Embedding) else u.shape[2]
        got = _jacobian_rows(u, g.detach(), d_in).sum(0)
        want = _param_grad_flat(s, grads[at : at + len(_selected(s))])
        at += len(_selected(s))
        if (got - want).norm() <= tol * max(got.norm(), want.norm()):
            eligible[m] = dataclasses.replace(s, positions=g.shape[1], out=g.shape[2], d_in=d_in)
    return eligible


def _chunk_forward(
    model: nn.Module, xb: Tensor, sites: dict[str, _Site]
) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """Forward pass on samples xb: outputs (n, C) and each site's (input, output)."""
    f, calls = _record_calls(model, xb, {m: s.module for m, s in sites.items()})
    if any(len(calls[m]) != 1 or calls[m][0][0].shape[0] != xb.shape[0] for m in sites):
        raise RuntimeError("a structured layer was called differently than on the probe samples")
    return f, {m: calls[m][0] for m in sites}


def _class_grads(
    f: Tensor, ios: dict[str, tuple[Tensor, Tensor]], sites: dict[str, _Site], weights: Tensor | None
) -> Iterator[dict[str, Tensor | None]]:
    """Per class c: {layer: ∂(w_c Σ_n f_c(x_n))/∂out (n, T, out), None if unused}, one backward each.

    Samples are independent, so that gradient holds every per-sample ∂f_c(x_n)/∂out_n at once.
    """
    n, c = f.shape
    w = torch.ones(c, dtype=f.dtype, device=f.device) if weights is None else weights.to(f)
    outs = [out for _, out in ios.values()]
    for k in range(c):
        # A scalar loss: explicit grad_outputs would import sympy on first use, seconds per process.
        grads = torch.autograd.grad(f[:, k].sum() * w[k], outs, retain_graph=k < c - 1, allow_unused=True)
        yield {m: None if g is None else _output_grads(sites[m].module, g, n) for m, g in zip(ios, grads, strict=False)}


def _chunk_grads(
    model: nn.Module, xb: Tensor, sites: dict[str, _Site], weights: Tensor | None
) -> dict[str, tuple[Tensor, Tensor]]:
    """One forward and C backward passes on samples xb: {layer: (U or tokens, G (C, n, T, out))}."""
    f, ios = _chunk_forward(model, xb, sites)
    g_all = {m: f.new_empty(f.shape[1], f.shape[0], s.positions, s.out) for m, s in sites.items()}
    for k, grads in enumerate(_class_grads(f, ios, sites, weights)):
        for m, g in grads.items():
            g_all[m][k] = 0 if g is None else g
    return {m: (_input_factors(s, ios[m][0]), g_all[m]) for m, s in sites.items()}


def _chunk_projections(
    model: nn.Module, xb: Tensor, sites: dict[str, _Site], weights: Tensor | None, bases: dict[str, Tensor]
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Like ``_chunk_grads`` for diag_mean with known bases, class by class, G never stored:
    {layer: (U or tokens, energies ‖R_j‖²_F (out,), rows R_jᵀ V_j (n·T, out, k))}."""
    f, ios = _chunk_forward(model, xb, sites)
    m_rows = {m: f.shape[0] * s.positions for m, s in sites.items()}
    acc = {m: (f.new_zeros(s.out), f.new_zeros(m_rows[m], s.out, bases[m].shape[2])) for m, s in sites.items()}
    for k, grads in enumerate(_class_grads(f, ios, sites, weights)):
        for m, g in grads.items():
            if g is not None:
                _project_class(*acc[m], g.flatten(0, 1), bases[m][:, k, :])
    return {m: (_input_factors(s, ios[m][0]), *acc[m]) for m, s in sites.items()}


def _project_class(energy: Tensor, rows: Tensor, g: Tensor, basis_c: Tensor) -> None:
    """Add one class's g (m, out) to energies (out,) and rows (m, out, k), bases' class row (out, k)."""
    energy += g.square().sum(0)
    rows.addcmul_(g[:, :, None], basis_c[None])


def _growing(energy: Tensor, rows: Tensor, c: int) -> Tensor:
    """Units (out,) whose residual energy outside their basis is above round-off."""
    # With orthonormal bases the residual energy is the energy less the rows' energy.
    return (energy - torch.linalg.vector_norm(rows, dim=(0, 2)).square()) > _round_off(energy, c)


def _round_off(energy: Tensor, c: int) -> Tensor:
    """Eigenvalue threshold max(C, 10)·eps·‖R_j‖²_F below which a direction of R_j is round-off."""
    return max(c, 10) * torch.finfo(energy.dtype).eps * energy


def _rank(basis: Tensor) -> int:
    """Number of nonzero columns of per-unit bases (out, C, k)."""
    return int((basis.square().sum(1) > 0).sum())


def _pivoted_basis(gram: Tensor, v: Tensor, tau: Tensor, room: int) -> Tensor:
    """Orthonormal columns (g, d, s) ⊥ v (g, d, k) spanning the eigen-directions above tau (g,) of
    PSD Grams (g, d, d) whose range is ⊥ v.

    Pivoted Gram-Schmidt on the Gram's columns, no eigensolver: a Gram stops once its residual's
    Frobenius norm, which bounds its remaining eigenvalues, is ≤ tau. Stops early once more than
    ``room`` columns were added.
    """
    d = gram.shape[1]
    cols: list[Tensor] = []
    col2 = gram.square().sum(1)
    added = 0
    while len(cols) < d and added <= room:
        active = col2.sum(1) > tau.square()
        idx = col2.argmax(1)
        if not active.any():
            break
        added += int(active.sum())
        q = gram.gather(2, idx[:, None, None].expand(-1, d, 1)).squeeze(2)
        # Project out the basis so far again: the residual is orthogonal to it only up to round-off.
        prev = torch.cat([v, *[c[:, :, None] for c in cols]], dim=2)
        q = q - (prev @ (prev.transpose(1, 2) @ q[:, :, None])).squeeze(2)
        q = q / q.norm(dim=1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny) * active[:, None]
        cols.append(q)
        gram = gram - q[:, :, None] * (q[:, None, :] @ gram)
        col2 = gram.square().sum(1)
    return torch.stack(cols, dim=2) if cols else gram.new_zeros(gram.shape[0], d, 0)


def _compress_chunk(g: Tensor, basis: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """Rows R_jᵀ V_j (n, T, out, k) of a chunk g (C, n, T, out), bases V (out, C, k) grown to cover it.

    Per unit, directions of the chunk's R_j R_jᵀ below ``_round_off`` are dropped; a unit grows
    only where its residual outside V_j is above that.
    """
    c, n, t, out = g.shape
    r = g.reshape(c, n * t, out)
    energy, rows = r.new_zeros(out), r.new_zeros(n * t, out, basis.shape[2])
    for k in range(c):
        _project_class(energy, rows, r[k], basis[:, k, :])
    grow = _growing(energy, rows, c)
    if grow.any():
        units = grow.nonzero().squeeze(1)
        e = (r if len(units) == out else r[:, :, units]).permute(2, 0, 1).contiguous()
        if basis.shape[2]:
            e -= basis[units] @ rows[:, units].permute(1, 2, 0)
        tau = _round_off(energy[units], c)
        new = _pivoted_basis(e @ e.transpose(1, 2), basis[units], tau, limit - _rank(basis))
        extra = basis.new_zeros(out, c, new.shape[2])
        extra[units] = new
        added = rows.new_zeros(n * t, out, new.shape[2])
        added[:, units] = (new.transpose(1, 2) @ e).permute(2, 0, 1)
        basis, rows = torch.cat([basis, extra], dim=2), torch.cat([rows, added], dim=2)
    return rows.reshape(n, t, out, -1), basis


def _diag_mean_step(rows: list[Tensor], basis: Tensor | None, g: Tensor) -> tuple[list[Tensor], Tensor | None]:
    """Append a chunk's diag_mean rows, compressed while Σ_j rank(R_j) ≤ C·out/2, else plain (n, T, out, C)."""
    c, out = g.shape[0], g.shape[3]
    if basis is not None:
        new, grown = _compress_chunk(g, basis, c * out // 2)
        if _rank(grown) <= c * out // 2:
            return rows + [new], grown
        # Compression no longer pays: earlier chunks expand exactly, R_j = V_j (R_jᵀ V_j)ᵀ.
        rows = [torch.einsum("ntjk,jck->ntjc", r, basis[:, :, : r.shape[3]]) for r in rows]
    return rows + [g.permute(1, 2, 3, 0)], None


def _join_rows(rows: list[Tensor], basis: Tensor | None) -> Tensor:
    """diag_mean rows (N, T, w) from per-chunk rows: the bases' nonzero columns, or all out·C."""
    if basis is None:
        return torch.cat(rows).flatten(2)
    k = basis.shape[2]
    full = torch.cat([F.pad(r, (0, k - r.shape[3])) for r in rows])
    return full[:, :, basis.square().sum(1) > 0]


def _structured_factors(
    model: nn.Module,
    x: Tensor,
    sites: dict[str, _Site],
    weights: Tensor | None,
    outputs: str,
    n_outputs: int,
    budget: int,
) -> dict[str, _Factors]:
    """Per-sample factors of every site, computed over chunks of samples that fit the budget."""
    dtype = next(model.parameters()).dtype
    elem = torch.empty(0, dtype=dtype).element_size()
    per_sample = sum(
        s.positions * (3 * n_outputs * s.out + (1 if isinstance(s.module, nn.Embedding) else s.d_in))
        for s in sites.values()
    )
    chunk = max(1, budget // (elem * per_sample))
    # A small first chunk finds the diag_mean bases (the one step that forms Grams), and later
    # chunks mostly only project onto them.
    first = min(chunk, 2 * n_outputs) if outputs == "diag_mean" else chunk
    starts = [0, *range(first, x.shape[0], chunk)]
    ends = [*starts[1:], x.shape[0]]
    us: dict[str, list[Tensor]] = {m: [] for m in sites}
    hs: dict[str, list[Tensor]] = {m: [] for m in sites}
    bases = {m: x.new_zeros(s.out, n_outputs, 0, dtype=dtype) if n_outputs > 1 else None for m, s in sites.items()}
    for start, end in zip(starts, ends, strict=False):
        xb = x[start:end]
        if outputs == "diag_mean" and all(b is not None and b.shape[2] for b in bases.values()):
            # Known bases: project class by class; a chunk that leaves them is redone with its G.
            streamed = _chunk_projections(model, xb, sites, weights, bases)
            if not any(_growing(e, r, n_outputs).any() for _, e, r in streamed.values()):
                for m, (u, _, r) in streamed.items():
                    us[m].append(u)
                    hs[m].append(r.reshape(*u.shape[:2], *r.shape[1:]))
                continue
        for m, (u, g) in _chunk_grads(model, xb, sites, weights).items():
            us[m].append(u)
            if outputs == "flatten":
                hs[m].append(g)
            elif outputs == "all_mean":
                hs[m].append(g.mean(0))
            else:
                hs[m], bases[m] = _diag_mean_step(hs[m], bases[m], g)
    factors = {}
    for m, s in sites.items():
        if outputs == "flatten":
            h = torch.cat(hs[m], dim=1).flatten(0, 1)
        elif outputs == "all_mean":
            h = torch.cat(hs[m])
        else:
            h = _join_rows(hs[m], bases[m]) / math.sqrt(n_outputs)
        factors[m] = _Factors(torch.cat(us[m]), h, s.d_in)
    return factors


# --- From factors to a kernel ---


def _compress_width(h: Tensor, limit: int) -> Tensor:
    """h (rows, T, w) → h Q (rows, T, r) with the same products h_at · h_bs, if its rank r ≤ limit < w."""
    w = h.shape[2]
    flat = h.flatten(0, 1)
    gram = (flat.T @ flat)[None]
    # The Gram's Frobenius norm stands for its largest eigenvalue (within √rank).
    tau = max(w, 10) * torch.finfo(h.dtype).eps * gram.norm(dim=(1, 2))
    q = _pivoted_basis(gram, gram.new_zeros(1, w, 0), tau, limit)[0]
    return h @ q if q.shape[1] <= limit < w else h


def _block_rows(elems: int, per_row: float, per_pair: float, dim: int) -> int:
    """Largest block b ≤ dim (at least 1) with per_row·b + per_pair·b² ≤ elems."""
    if per_pair == 0:
        b = elems / per_row
    else:
        b = (math.sqrt(per_row**2 + 4 * per_pair * elems) - per_row) / (2 * per_pair)
    return max(1, min(dim, int(b)))


def _slices(dim: int, block: int) -> list[slice]:
    return [slice(a, min(a + block, dim)) for a in range(0, dim, block)]


def _fill_symmetric(k: Tensor, block: int, rows: Callable, pair: Callable[..., Tensor]) -> Tensor:
    """Add the symmetric matrix with blocks pair(rows(a), rows(b)) to k (dim, dim), forming only b ≥ a."""
    # Eight or more blocks a side skip most of the mirrored half while each product stays large.
    spans = _slices(k.shape[0], min(block, max(256, -(-k.shape[0] // 8))))
    for i, a in enumerate(spans):
        ra = rows(a)
        for j, b in enumerate(spans[i:], start=i):
            blk = pair(ra, ra if j == i else rows(b))
            k[a, b] += blk
            if j != i:
                k[b, a] += blk.T
    return k


def _factor_kernel(fac: _Factors, n: int, c: int, outputs: str, budget: int) -> Kernel:
    """One layer's kernel from its factors: rows Σ_t h ⊗ u if no wider than the kernel, else dense."""
    u, h, d_in = fac.u, fac.h, fac.d_in
    if h.shape[2] * d_in > h.shape[0] and h.shape[2] <= 2048:
        # A rank ≤ dim / d_in would make the factor form possible: worth one (w, w) Gram to find out.
        h = _compress_width(h, h.shape[0] // d_in)
    dim, t, w = h.shape
    width, elems = w * d_in, budget // h.element_size()

    def u_rows(a: slice) -> Tensor:
        # flatten rows are (class, sample) pairs, class-major.
        return u[a] if u.shape[0] == dim else u[torch.arange(a.start, a.stop, device=u.device) % n]

    def jac(a: slice) -> Tensor:
        return _jacobian_rows(u_rows(a), h[a], d_in)

    if width <= dim:
        f = h.new_empty(dim, width)
        for a in _slices(dim, _block_rows(elems, 3 * width + t * (d_in + w), 0, dim)):
            f[a] = jac(a)
        return Kernel("factor", f, n, c, outputs)
    k = h.new_zeros(dim, dim)
    u_width = d_in if u.is_floating_point() else 1
    if width <= t * t * (u_width + w):
        block = _block_rows(elems, 3 * width + 2 * t * (d_in + w), 2, dim)
        return Kernel("dense", _fill_symmetric(k, block, jac, lambda p, q: p @ q.T), n, c, outputs)

    def position_pairs(p: tuple[Tensor, Tensor], q: tuple[Tensor, Tensor]) -> Tensor:
        prod = _u_gram(p[0], q[0], h.dtype).mul_(p[1].flatten(0, 1) @ q[1].flatten(0, 1).T)
        return prod if t == 1 else prod.view(p[1].shape[0], t, q[1].shape[0], t).sum((1, 3))

    block = _block_rows(elems, 2 * t * (u_width + w), 3 * t * t, dim)
    return Kernel("dense", _fill_symmetric(k, block, lambda a: (u_rows(a), h[a]), position_pairs), n, c, outputs)


# --- Generic path: per-sample Jacobians by torch.func ---


def _generic_jacobians(
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
    (1/C) Σ_c w_c f_c, so one reverse pass per sample replaces C and the result is (1, N, numel)
    (the per-tensor kernels of the 1-layer Transformer, C = 30: 0.02 s against 6 s for W_in).
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


def _jacobian_kernel(jac: Tensor, outputs: str, n_outputs: int) -> Kernel:
    """Kernel from a Jacobian (C, N, P), or for ``all_mean`` its class mean (1, N, P), in the compact form."""
    c, n, p = jac.shape
    if outputs == "flatten":
        f = jac.reshape(c * n, p)
    elif outputs == "diag_mean":
        f = jac.permute(1, 0, 2).reshape(n, c * p) / math.sqrt(c)
    else:
        f = jac.mean(0)
    kernel = Kernel("factor", f, n, n_outputs, outputs)
    return kernel if f.shape[1] <= f.shape[0] else _replace(kernel, "dense", f @ f.T)


def _group_kernels(
    model: nn.Module,
    x: Tensor,
    groups: dict[str, list[str]],
    outputs: str,
    output_weights: Tensor | None,
    max_memory_gb: float | None,
) -> dict[str, Kernel]:
    """One exact compact kernel per module of ``groups`` ({module: its selected parameter names})."""
    if outputs not in OUTPUT_MODES:
        raise ValueError(f"unknown outputs mode {outputs!r}; choose one of {OUTPUT_MODES}")
    budget = _budget_bytes(max_memory_gb)
    ref = next(model.parameters())
    x = x.to(device=ref.device, dtype=ref.dtype if x.is_floating_point() else x.dtype)
    with torch.no_grad():
        n_outputs = _forward_checked(model, x[:1]).shape[1]
    weights = _check_weights(output_weights, n_outputs)
    sites = _eligible_sites(model, x, groups)
    factors = _structured_factors(model, x, sites, weights, outputs, n_outputs, budget) if sites else {}
    kernels = {m: _factor_kernel(fac, x.shape[0], n_outputs, outputs, budget) for m, fac in factors.items()}
    generic = [n for m, names in groups.items() if m not in kernels for n in names]
    if generic:
        jac = _generic_jacobians(model, x, generic, weights, n_outputs, budget, outputs)
        for m, names in groups.items():
            if m not in kernels:
                kernels[m] = _jacobian_kernel(torch.cat([jac[k] for k in names], dim=2), outputs, n_outputs)
    return {m: kernels[m] for m in groups}


def _sum(kernels: list[Kernel]) -> Kernel:
    total = kernels[0]
    for k in kernels[1:]:
        total = total + k
    return total


@guarded
def compact_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    params: list[str] | None = None,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
    max_memory_gb: float | None = None,
) -> Kernel:
    """The eNTK as a ``Kernel`` in its most compact exact form (dense or factor)."""
    groups = resolve_params(model, params)
    return _sum(list(_group_kernels(model, x, groups, outputs, output_weights, max_memory_gb).values()))


@guarded
def layer_ntks(
    model: nn.Module,
    x: Tensor,
    layers: dict[str, list[str] | None],
    *,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
    max_memory_gb: float | None = None,
) -> dict[str, Kernel]:
    """Compact eNTK per named layer ({name: parameter/module names, None = all}), one pass for all.

    Layers that select different parameter subsets of one module cannot share that module's
    kernel; each such layer is computed on its own.
    """
    per_layer = {name: resolve_params(model, spec) for name, spec in layers.items()}
    union: dict[str, list[str]] = {}
    for groups in per_layer.values():
        for m, names in groups.items():
            union.setdefault(m, names)
    shared = {n for n, groups in per_layer.items() if all(union[m] == names for m, names in groups.items())}
    modules = _group_kernels(model, x, union, outputs, output_weights, max_memory_gb) if shared else {}
    return {
        name: _sum([modules[m] for m in groups])
        if name in shared
        else _sum(list(_group_kernels(model, x, groups, outputs, output_weights, max_memory_gb).values()))
        for name, groups in per_layer.items()
    }


@guarded
def empirical_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    params: list[str] | None = None,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
    max_memory_gb: float | None = None,
) -> Tensor:
    """Dense eNTK: (C·N, C·N) class-major for ``flatten``, (N, N) for ``diag_mean``/``all_mean``."""
    kernel = compact_ntk(
        model, x, params=params, outputs=outputs, output_weights=output_weights, max_memory_gb=max_memory_gb
    )
    return kernel.dense()


@guarded
def layerwise_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
    max_memory_gb: float | None = None,
) -> dict[str, Tensor]:
    """Dense eNTK per module that directly owns parameters ('' = the root); they sum to the full one."""
    groups = resolve_params(model, None)
    kernels = _group_kernels(model, x, groups, outputs, output_weights, max_memory_gb)
    return {m: k.dense() for m, k in kernels.items()}
