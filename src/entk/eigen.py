"""Top eigenpairs of an eNTK and the spectral cliff (shared/paper.md, Notation and §1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from entk.kernels import Kernel, compact_ntk


def fix_signs(vectors: Tensor) -> Tensor:
    """Flip each column (dim, k) so that its entry of largest magnitude is positive."""
    idx = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[idx, torch.arange(vectors.shape[1], device=vectors.device)])
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def _check_k(k: int, dim: int) -> None:
    if not 1 <= k <= dim:
        raise ValueError(f"k must lie in [1, {dim}] (the kernel's dimension), got k = {k}")


def kernel_eigenpairs(kernel: Kernel, k: int) -> tuple[Tensor, Tensor]:
    """Top-k eigenpairs of a ``Kernel``: eigenvalues descending (k,), eigenvectors (dim, k).

    A factor F (dim, r) with r < dim is never expanded: the nonzero eigenvalues of F Fᵀ are those
    of the (r, r) Gram Fᵀ F, and its eigenvectors map back as F v / √λ (paper, Notation).
    """
    _check_k(k, kernel.dim)
    f = kernel.data
    if kernel.kind == "factor" and k <= f.shape[1] < kernel.dim:
        evals, evecs = torch.linalg.eigh(f.T @ f)
        evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
        vecs = f @ evecs
        # Normalising columns directly stays finite where λ is at round-off level.
        vecs = vecs / vecs.norm(dim=0).clamp_min(torch.finfo(f.dtype).tiny)
    else:
        evals, vecs = torch.linalg.eigh(kernel.dense())
        evals, vecs = evals.flip(0)[:k], vecs.flip(1)[:, :k]
    return evals, fix_signs(vecs)


def top_eigenpairs(
    model: nn.Module,
    x: Tensor,
    k: int,
    *,
    params: list[str] | None = None,
    outputs: str = "flatten",
    output_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k eNTK eigenpairs: eigenvalues descending (k,), eigenvectors (dim, k) in kernel index space."""
    kernel = compact_ntk(model, x, params=params, outputs=outputs, output_weights=output_weights)
    return kernel_eigenpairs(kernel, k)


def cliff(eigenvalues: Tensor, max_index: int | None = None) -> int:
    """Number of eigenvalues above the largest ratio gap λ_i/λ_{i+1} among the first ``max_index``."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)[:max_index]
    if lam.numel() < 2:
        raise ValueError("a cliff needs at least two eigenvalues")
    lam = lam.clamp_min(torch.finfo(torch.float64).tiny)
    return int(torch.argmax(lam[:-1] / lam[1:])) + 1
