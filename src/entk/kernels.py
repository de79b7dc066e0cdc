"""Empirical NTK of any ``torch.nn.Module`` mapping x (N, ...) to f (N, C).

Notation (shared/paper.md, "Notation"): K[(n,c),(m,d)] = ∂f_c(x_n)/∂θ · ∂f_d(x_m)/∂θ = J Jᵀ with
J of shape (C·N, P), ordered class-major (row c·N + n). Every output reduction keeps the form
K = F Fᵀ for some factor F, which is what lets ``top_eigenpairs`` work on the smaller side:

- ``flatten``   : F = J                                   (C·N, P)
- ``diag_mean`` : F = [J_1 … J_C] / √C                    (N, C·P),  K = (1/C) Σ_c K_cc
- ``all_mean``  : F = (1/C) Σ_c J_c                       (N, P),    K = (1/C²) Σ_{c,d} K_cd

``nn.Linear`` layers that are called once on a 2-D input take a structured path: with layer
input A (N, in) and output gradients G_c (N, out), K_cd = (A Aᵀ + 1[bias]) ⊙ (G_c G_dᵀ), so the
per-sample Jacobian is never formed. Any other module goes through ``torch.func`` per-sample
Jacobians. Both paths assume samples do not interact inside the forward pass (no batch norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

OUTPUT_MODES = ("flatten", "diag_mean", "all_mean")

# Per-sample Jacobians are built in chunks of samples so that one chunk stays near this size.
_JACOBIAN_CHUNK_BYTES = 256 * 2**20


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
        return _replace(self, "dense", self.dense() + other.dense())

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
            f"output_weights must have shape ({n_outputs},), one weight per model output, "
            f"got {tuple(weights.shape)}"
        )
    return weights


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


def _structured_linears(
    model: nn.Module, x: Tensor, groups: dict[str, list[str]], weights: Tensor | None
) -> dict[str, tuple[Tensor, Tensor]]:
    """For eligible ``nn.Linear`` groups: {module: (A (N, in), G (C, N, out))}."""
    modules = dict(model.named_modules())
    candidates = [m for m in groups if isinstance(modules[m], nn.Linear)]
    if not candidates:
        return {}
    seen: dict[str, list] = {m: [] for m in candidates}
    hooks = [
        modules[m].register_forward_hook(lambda mod, inp, out, m=m: seen[m].append((inp[0], out)))
        for m in candidates
    ]
    try:
        with torch.enable_grad():
            f = _forward_checked(model, x)
    finally:
        for h in hooks:
            h.remove()
    # A layer called twice (weight sharing) or on a sequence has cross terms the formula lacks.
    eligible = {m: calls[0] for m, calls in seen.items() if len(calls) == 1 and calls[0][0].ndim == 2}
    eligible = {m: io for m, io in eligible.items() if io[1].requires_grad}
    if not eligible:
        return {}
    n, c = f.shape
    w = torch.ones(c, dtype=f.dtype, device=f.device) if weights is None else weights.to(f)
    outs = [io[1] for io in eligible.values()]
    # Samples are independent, so the gradient of Σ_n f_c(x_n) w.r.t. a layer's output holds
    # every per-sample ∂f_c(x_n)/∂out_n at once: one backward pass per output c. A plain loop
    # measured faster than is_grads_batched here.
    per_class = [
        torch.autograd.grad(f[:, k].sum() * w[k], outs, retain_graph=k < c - 1, allow_unused=True)
        for k in range(c)
    ]
    result = {}
    for i, (m, (a, out)) in enumerate(eligible.items()):
        g = torch.stack([torch.zeros_like(out) if gk[i] is None else gk[i] for gk in per_class])
        result[m] = (a.detach(), g.detach())
    return result


def _linear_kernel(
    a: Tensor, g: Tensor, use_weight: bool, use_bias: bool, outputs: str
) -> Kernel:
    """Kernel of one Linear layer from inputs a (N, in) and output gradients g (C, N, out)."""
    c, n, out = g.shape
    s = torch.zeros(n, n, dtype=a.dtype, device=a.device)
    if use_weight:
        s = s + a @ a.T
    if use_bias:
        s = s + 1.0
    width = out * ((a.shape[1] if use_weight else 0) + (1 if use_bias else 0))
    if outputs == "flatten":
        dim = c * n
        if width <= dim:
            return Kernel("factor", _linear_jacobian(a, g, use_weight, use_bias).reshape(dim, width), n, c, outputs)
        gg = g.reshape(dim, out) @ g.reshape(dim, out).T
        return Kernel("dense", gg * s.repeat(c, c), n, c, outputs)
    if outputs == "diag_mean":
        if c * width <= n:
            jac = _linear_jacobian(a, g, use_weight, use_bias)
            return Kernel("factor", jac.permute(1, 0, 2).reshape(n, c * width) / math.sqrt(c), n, c, outputs)
        gt = g.permute(1, 0, 2).reshape(n, c * out)
        return Kernel("dense", s * (gt @ gt.T) / c, n, c, outputs)
    gbar = g.mean(0)
    if width <= n:
        return Kernel("factor", _linear_jacobian(a, gbar[None], use_weight, use_bias)[0], n, c, outputs)
    return Kernel("dense", s * (gbar @ gbar.T), n, c, outputs)


def _linear_jacobian(a: Tensor, g: Tensor, use_weight: bool, use_bias: bool) -> Tensor:
    """Per-sample Jacobian of a Linear layer (C, N, out·in [+ out]) from a (N, in), g (C, N, out)."""
    parts = []
    if use_weight:
        parts.append(torch.einsum("cno,ni->cnoi", g, a).flatten(2))
    if use_bias:
        parts.append(g)
    return torch.cat(parts, dim=2)


def _generic_jacobians(
    model: nn.Module, x: Tensor, names: list[str], weights: Tensor | None, n_outputs: int
) -> dict[str, Tensor]:
    """Per-sample Jacobians {param name: (C, N, numel)} by ``vmap(jacrev)``, chunked over samples."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    selected = {k: params[k].detach() for k in names}
    frozen = {k: v.detach() for k, v in params.items() if k not in selected}

    def f_one(p: dict[str, Tensor], x1: Tensor) -> Tensor:
        return functional_call(model, {**frozen, **buffers, **p}, (x1.unsqueeze(0),)).squeeze(0)

    numel = sum(v.numel() for v in selected.values())
    chunk = max(1, _JACOBIAN_CHUNK_BYTES // max(1, n_outputs * numel * x.element_size()))
    pieces: dict[str, list[Tensor]] = {k: [] for k in names}
    for start in range(0, x.shape[0], chunk):
        jac = vmap(jacrev(f_one), in_dims=(None, 0))(selected, x[start : start + chunk])
        for k in names:
            j = jac[k].flatten(2).transpose(0, 1)
            pieces[k].append(j if weights is None else weights.to(j)[:, None, None] * j)
    return {k: torch.cat(v, dim=1) for k, v in pieces.items()}


def _jacobian_kernel(jac: Tensor, outputs: str) -> Kernel:
    """Kernel from a Jacobian (C, N, P) in the compact form for ``outputs``."""
    c, n, p = jac.shape
    if outputs == "flatten":
        f = jac.reshape(c * n, p)
    elif outputs == "diag_mean":
        f = jac.permute(1, 0, 2).reshape(n, c * p) / math.sqrt(c)
    else:
        f = jac.mean(0)
    kernel = Kernel("factor", f, n, c, outputs)
    return kernel if f.shape[1] <= f.shape[0] else _replace(kernel, "dense", f @ f.T)


def _group_kernels(
    model: nn.Module,
    x: Tensor,
    groups: dict[str, list[str]],
    outputs: str,
    output_weights: Tensor | None,
) -> dict[str, Kernel]:
    """One exact compact kernel per module of ``groups`` ({module: its selected parameter names})."""
    if outputs not in OUTPUT_MODES:
        raise ValueError(f"unknown outputs mode {outputs!r}; choose one of {OUTPUT_MODES}")
    ref = next(model.parameters())
    x = x.to(device=ref.device, dtype=ref.dtype if x.is_floating_point() else x.dtype)
    with torch.no_grad():
        n_outputs = _forward_checked(model, x[:1]).shape[1]
    weights = _check_weights(output_weights, n_outputs)
    structured = _structured_linears(model, x, groups, weights)
    modules = dict(model.named_modules())
    kernels: dict[str, Kernel] = {}
    for m, (a, g) in structured.items():
        names = {n.rpartition(".")[2] for n in groups[m]}
        if names <= {"weight", "bias"}:
            has_bias = modules[m].bias is not None and "bias" in names
            kernels[m] = _linear_kernel(a, g, "weight" in names, has_bias, outputs)
    generic = [n for m, names in groups.items() if m not in kernels for n in names]
    if generic:
        jac = _generic_jacobians(model, x, generic, weights, n_outputs)
        for m, names in groups.items():
            if m not in kernels:
                kernels[m] = _jacobian_kernel(torch.cat([jac[k] for k in names], dim=2), outputs)
    return {m: kernels[m] for m in groups}


def _sum(kernels: list[Kernel]) -> Kernel:
    total = kernels[0]
    for k in kernels[1:]:
        total = total + k
    return total


def compact_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    params: list[str] | None = None,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
) -> Kernel:
    """The eNTK as a ``Kernel`` in its most compact exact form (dense or factor)."""
    groups = resolve_params(model, params)
    return _sum(list(_group_kernels(model, x, groups, outputs, output_weights).values()))


def layer_ntks(
    model: nn.Module,
    x: Tensor,
    layers: dict[str, list[str] | None],
    *,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
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
    modules = _group_kernels(model, x, union, outputs, output_weights) if shared else {}
    return {
        name: _sum([modules[m] for m in groups])
        if name in shared
        else _sum(list(_group_kernels(model, x, groups, outputs, output_weights).values()))
        for name, groups in per_layer.items()
    }


def empirical_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    params: list[str] | None = None,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
) -> Tensor:
    """Dense eNTK: (C·N, C·N) class-major for ``flatten``, (N, N) for ``diag_mean``/``all_mean``."""
    return compact_ntk(model, x, params=params, outputs=outputs, output_weights=output_weights).dense()


def layerwise_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """Dense eNTK per module that directly owns parameters ('' = the root); they sum to the full one."""
    groups = resolve_params(model, None)
    return {m: k.dense() for m, k in _group_kernels(model, x, groups, outputs, output_weights).items()}
