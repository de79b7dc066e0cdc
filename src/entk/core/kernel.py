"""The ``Kernel`` type: an eNTK in its most compact exact form, and the output modes it comes in.

Notation (docs/spec.md, "Notation"): K[(n,c),(m,d)] = ∂f_c(x_n)/∂θ · ∂f_d(x_m)/∂θ = J Jᵀ with
J of shape (C·N, P), ordered class-major (row c·N + n). Every output reduction keeps the form
K = F Fᵀ for some factor F:

- ``flatten``   : F = J                                   (C·N, P)
- ``diag_mean`` : F = [J_1 … J_C] / √C                    (N, C·P),  K = (1/C) Σ_c K_cc
- ``all_mean``  : F = (1/C) Σ_c J_c                       (N, P),    K = (1/C²) Σ_{c,d} K_cd

Against neural-tangents' ``trace_axes`` (0.6.5, which averages over the traced axis): ``flatten`` is
``trace_axes=()`` laid out class-major, ``diag_mean`` is ``trace_axes=(-1,)``, and ``all_mean`` is the
kernel of the scalar mean output (1/C) Σ_c f_c, which ``trace_axes`` cannot express. A factor's columns need not be
parameters: any F with K = F Fᵀ is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

OUTPUT_MODES = ("flatten", "diag_mean", "all_mean")


def check_outputs(outputs: str) -> str:
    """``outputs`` if it names an output mode, else a ValueError listing them."""
    if outputs not in OUTPUT_MODES:
        raise ValueError(f"unknown outputs mode {outputs!r}; choose one of {OUTPUT_MODES}")
    return outputs


def check_weights(weights: Tensor | None, n_outputs: int) -> Tensor | None:
    """Output weights as a tensor of shape (C,), or None; a ValueError names a wrong shape."""
    if weights is None:
        return None
    weights = torch.as_tensor(weights)
    if weights.shape != (n_outputs,):
        raise ValueError(
            f"output_weights must have shape ({n_outputs},), one weight per model output, got {tuple(weights.shape)}"
        )
    return weights


@dataclass(frozen=True)
class Kernel:
    """An eNTK in its most compact exact form: ``dense`` (dim, dim) or ``factor`` F (dim, r), K = F Fᵀ.

    ``rows``, for a factor, lists the rows that may be nonzero (None: any): outputs whose gradients
    all vanish (behind a ReLU that is off) are zero rows, never computed, stored lazily, skipped.
    """

    kind: Literal["dense", "factor"]
    data: Tensor
    n_samples: int
    n_outputs: int
    outputs: str
    rows: Tensor | None = None

    @property
    def dim(self) -> int:
        """Side length of the kernel: C·N for ``flatten``, N otherwise."""
        return self.data.shape[0]

    def dense(self) -> Tensor:
        """The kernel as a dense (dim, dim) matrix (a factor's F Fᵀ, one triangle of products)."""
        return self.data if self.kind == "dense" else factor_gram(self.data, self.rows)

    def matvec(self):
        """V (dim, b) → K V from the stored form (F (Fᵀ V) for a factor), V taken to the data's dtype and device."""
        f = self.data
        if self.kind == "factor":
            return lambda v: f @ (f.T @ v.to(f))
        return lambda v: f @ v.to(f)

    def replace(self, kind: str, data: Tensor, rows: Tensor | None = None) -> Kernel:
        """The same kernel's metadata with other data."""
        return Kernel(kind, data, self.n_samples, self.n_outputs, self.outputs, rows if kind == "factor" else None)

    def __add__(self, other: Kernel) -> Kernel:
        if (self.dim, self.outputs) != (other.dim, other.outputs):
            raise ValueError("kernels of different shapes or output modes cannot be added")
        if self.kind == other.kind == "factor" and self.data.shape[1] + other.data.shape[1] <= self.dim:
            if self.rows is None or other.rows is None:
                return self.replace("factor", torch.cat([self.data, other.data], dim=1))
            rows = torch.cat([self.rows, other.rows]).unique()
            f = zeros(self.dim, self.data.shape[1] + other.data.shape[1], self.data)
            f[rows] = torch.cat([self.data[rows], other.data[rows]], dim=1)
            return self.replace("factor", f, rows)
        if self.kind == "factor" and other.kind == "dense":
            return other + self
        if other.kind == "dense":
            return self.replace("dense", self.data + other.data)
        # One fused product-and-add: a single new (dim, dim) matrix rather than three.
        return self.replace("dense", torch.addmm(self.dense(), other.data, other.data.T))

    def scale_outputs(self, weights: Tensor) -> Kernel:
        """K → D K D with D = diag(w_c) repeated over samples; exact only for ``flatten`` kernels."""
        if self.outputs != "flatten":
            raise ValueError(
                f"output weights can be applied after the fact only to a 'flatten' kernel, not "
                f"'{self.outputs}': pass output_weights when computing the kernel instead"
            )
        w = check_weights(weights, self.n_outputs).to(self.data).repeat_interleave(self.n_samples)
        if self.kind == "factor":
            return self.replace("factor", w[:, None] * self.data, self.rows)
        return self.replace("dense", w[:, None] * self.data * w[None, :])

    def to(self, device: torch.device | str) -> Kernel:
        """The same kernel with its data on ``device``."""
        return self.replace(self.kind, self.data.to(device), None if self.rows is None else self.rows.to(device))

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


def sum_kernels(kernels: list[Kernel]) -> Kernel:
    """Σ of kernels of one shape and output mode, kept compact where the factors allow."""
    total = kernels[0]
    for k in kernels[1:]:
        total = total + k
    return total


def zeros(rows: int, cols: int, like: Tensor) -> Tensor:
    """A zero (rows, cols) matrix like ``like``; on the CPU its pages are mapped lazily (calloc), so
    parts never written cost nothing until read."""
    if like.device.type == "cpu":
        return torch.from_numpy(np.zeros((rows, cols), dtype=torch.empty(0, dtype=like.dtype).numpy().dtype))
    return like.new_zeros(rows, cols)


def fill_symmetric(dim: int, like: Tensor, rows, pair, block: int) -> Tensor:
    """The symmetric (dim, dim) matrix with blocks pair(rows(a), rows(b)), forming only b ≥ a."""
    # Eight or more blocks a side skip most of the mirrored half while each product stays large
    # (below 1024 rows the overhead of more, smaller products outweighs what they skip).
    size = min(block, max(1024, -(-dim // 8)))
    spans = [slice(a, min(a + size, dim)) for a in range(0, dim, size)]
    if len(spans) == 1:
        whole = rows(spans[0])
        return pair(whole, whole)
    k = like.new_empty(dim, dim)
    for i, a in enumerate(spans):
        ra = rows(a)
        for j, b in enumerate(spans[i:], start=i):
            blk = pair(ra, ra if j == i else rows(b))
            k[a, b] = blk
            if j != i:
                k[b, a] = blk.T
    return k


def factor_gram(f: Tensor, rows: Tensor | None = None) -> Tensor:
    """F Fᵀ (dim, dim) of a factor F (dim, r): one triangle of products, over F's nonzero rows only
    (``rows`` where known, else found).

    An exactly zero row of F is a zero row and column of K (outputs behind a ReLU that is off):
    those are never computed, and on the CPU their pages are never written.
    """
    dim = f.shape[0]
    idx = f.ne(0).any(dim=1).nonzero().squeeze(1) if rows is None else rows
    count = len(idx)
    if count == dim:
        return fill_symmetric(dim, f, lambda a: f[a], lambda p, q: p @ q.T, dim)
    k = zeros(dim, dim, f)
    if count == 0:
        return k
    sub = f[idx]
    small = fill_symmetric(count, sub, lambda a: sub[a], lambda p, q: p @ q.T, count)
    # Row by row: each written row of k is one contiguous scatter of the nonzero columns.
    k[idx.unsqueeze(1), idx.unsqueeze(0)] = small
    return k
