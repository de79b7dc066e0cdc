"""Top eigenpairs of a symmetric PSD matrix or operator, knowing nothing of models (docs/spec.md §1).

- ``top_symmetric``  a dense (n, n) matrix: LAPACK's subset solver for a small share of the
                     spectrum on the CPU, a full eigh otherwise.
- ``gram_eigenpairs`` F Fᵀ from the (r, r) Gram Fᵀ F of a factor F (dim, r).
- ``davidson``       an operator V (dim, b) -> K V given as an ``EigenProblem``: a block solver on
                     products only.

The block solver is a Davidson method without preconditioner (block Lanczos with full
reorthogonalisation and thick restart), written here rather than taken from scipy because
``scipy.sparse.linalg.lobpcg`` silently forms the dense matrix from the operator when
dim < 5 × block (e.g. the top 200 of an 841² kernel) and requires its guard vectors to converge
too; on the flattened ModMLP(29) kernel (top 50, block 64, same tolerance) it took 90 iterations
and 1237 kernel–vector products against 31 and 1115 for this solver. ARPACK's ``eigsh`` is
single-vector Lanczos: it can miss copies of an exactly repeated eigenvalue (output-layer kernels
repeat each eigenvalue C times) and cannot batch products. A block at least as large as a
multiplicity finds every copy, and one block shares one batched product.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

Matvec = Callable[[Tensor], Tensor]

# Below this share of the spectrum a CPU eigensolver that computes only the wanted eigenpairs
# (LAPACK's MRRR, dsyevr) beats a full eigh: 3× for the top 80 of a 2050² Gram, no gain for 200 of 841.
SUBSET_SHARE = 1 / 8

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SolverInfo:
    """How the block solver ended; max_residual = max_i≤k ‖K v_i − λ_i v_i‖ / λ_1 on the side it ran on
    ("kernel": K itself, "parameter": Fᵀ F)."""

    converged: bool
    iterations: int
    matvecs: int
    max_residual: float
    block_size: int
    max_basis: int
    side: str = "kernel"


@dataclasses.dataclass(frozen=True)
class EigenProblem:
    """The top k eigenpairs of a symmetric PSD operator ``matvec``: V (dim, b) -> K V, and how to solve it.

    tol         residual bound relative to λ_1 (None: ``default_tol``)
    max_iter    iterations before giving up with a warning
    seed        the random start block (drawn on the CPU, so that a seed starts alike on every device)
    block_size  vectors per block b (None: ``default_block_size``; held in [k, dim])
    max_basis   vectors the basis holds with their images (None: 4 blocks; at least b + 1, at most dim)
    start       vectors (dim, j) that begin the start block in place of its first j random columns, e.g.
                approximate eigenvectors from a cheaper solver (None: all random)
    start_images  K·start (dim, j) where the caller has them already (e.g. a Lanczos run's basis and its
                products): the basis then begins with the start vectors and their images, plus b − min(j, k)
                random guard vectors (j may exceed b; where the basis cannot hold them all beside the guards,
                the start's top Ritz vectors in their span)
    """

    matvec: Matvec
    dim: int
    k: int
    dtype: torch.dtype = torch.float64
    device: torch.device | str | None = None
    tol: float | None = None
    max_iter: int = 200
    seed: int = 0
    block_size: int | None = None
    max_basis: int | None = None
    start: Tensor | None = None
    start_images: Tensor | None = None


def fix_signs(vectors: Tensor) -> Tensor:
    """Flip each column (dim, k) so that its entry of largest magnitude is positive."""
    idx = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[idx, torch.arange(vectors.shape[1], device=vectors.device)])
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def unit_columns(vectors: Tensor) -> Tensor:
    """Columns (dim, k) scaled to unit norm; a zero column stays zero."""
    # Normalising F u directly, rather than dividing by √λ, stays finite where λ is at round-off level.
    return vectors / vectors.norm(dim=0).clamp_min(torch.finfo(vectors.dtype).tiny)


def check_k(k: int, dim: int) -> None:
    """Raise ``ValueError`` unless k is a whole number of eigenpairs in [1, dim]."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be a whole number of eigenpairs, got {k!r}")
    if not 1 <= k <= dim:
        raise ValueError(f"k must lie in [1, {dim}] (the kernel's dimension), got k = {k}")


def default_tol(dtype: torch.dtype, dim: int) -> float:
    """Residual tolerance relative to λ_1: 1e-6, or 10·eps·√dim where that is larger (float32)."""
    # Rounding in the products leaves residuals of about eps·√dim·λ_1 (float32 at dim 1.44 M
    # stalled at 1.6e-4), so a tighter tolerance could never be met.
    return max(1e-6, 10 * torch.finfo(dtype).eps * math.sqrt(dim))


def default_block_size(k: int, dim: int) -> int:
    """Block size b = k + oversampling (≥ 8 guard vectors, 25 % for large k), at most dim."""
    return min(dim, k + max(8, k // 4))


def top_symmetric(a: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top k eigenpairs of a symmetric (n, n) matrix, descending: values (k,), vectors (n, k)."""
    n = a.shape[0]
    if a.device.type == "cpu" and k <= SUBSET_SHARE * n:
        import scipy.linalg

        evals, evecs = scipy.linalg.eigh(a.numpy(), subset_by_index=[n - k, n - 1], driver="evr")
        return torch.from_numpy(evals[::-1].copy()), torch.from_numpy(evecs[:, ::-1].copy())
    evals, evecs = torch.linalg.eigh(a)
    return evals.flip(0)[:k], evecs.flip(1)[:, :k]


def gram_eigenpairs(f: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top k of F Fᵀ from the (r, r) Gram of F (dim, r): values (k,), unit vectors (dim, k)."""
    evals, evecs = top_symmetric(f.T @ f, k)
    return evals, unit_columns(f @ evecs)


def _orthonormal_complement(w: Tensor, v: Tensor) -> Tensor:
    """Orthonormal basis (dim, ≤ m) of the part of w (dim, m) orthogonal to the orthonormal v (dim, j)."""
    # Classical Gram–Schmidt twice is orthogonal to working precision ("twice is enough").
    for _ in range(2):
        w = w - v @ (v.T @ w)
    w = w / w.norm(dim=0).clamp_min(torch.finfo(w.dtype).tiny)
    q, r = torch.linalg.qr(w)
    eps = torch.finfo(w.dtype).eps
    # A column already (numerically) in the span adds only noise: drop it.
    q = q[:, r.diagonal().abs() > math.sqrt(eps)]
    # QR divides a nearly dependent column by its small r_ii, which magnifies what the passes above left of v:
    # the residuals of Lanczos Ritz vectors (a start block) all lie along one vector, and lost enough
    # orthogonality for the solver to diverge. Project again where that happened.
    if q.shape[1] and (v.T @ q).abs().max() > 100 * eps:
        q = torch.linalg.qr(q - v @ (v.T @ q))[0]
    return q


def _check_start(start: Tensor, dim: int, b: int, what: str = "start vectors") -> int:
    """The number j of start vectors (dim, j), which must fit in b columns and be finite."""
    if start.ndim != 2 or start.shape[0] != dim or not 1 <= start.shape[1] <= b:
        raise ValueError(f"{what} must be (dim, j) = ({dim}, 1..{b}), got shape {tuple(start.shape)}")
    if not torch.isfinite(start).all():
        raise ValueError(f"{what} contain NaN or inf; give finite approximate eigenvectors (or none)")
    return start.shape[1]


def _start_with_images(problem: EigenProblem, b: int, m: int) -> tuple[Tensor, Tensor, int]:
    """The basis from start vectors (dim, j) whose images the caller gives, orthonormalised (images alike) and cut
    to their top Ritz vectors where more than the basis holds beside b − min(j, k) random guard vectors, which
    follow with their images; and the products that took."""
    dim, k = problem.dim, problem.k
    if problem.start is None:
        raise ValueError("start_images without start: give the vectors whose images they are")
    j = _check_start(problem.start, dim, dim)
    if problem.start_images.shape != problem.start.shape:
        raise ValueError(
            f"start_images must be K·start, of start's shape {tuple(problem.start.shape)}, got "
            f"{tuple(problem.start_images.shape)}"
        )
    _check_start(problem.start_images, dim, j, "start_images")
    v, r = torch.linalg.qr(problem.start.to(problem.dtype))
    if r.diagonal().abs().min() <= math.sqrt(torch.finfo(problem.dtype).eps) * r.diagonal().abs().max():
        raise ValueError("start vectors are (nearly) linearly dependent; give independent ones, e.g. a Lanczos basis")
    av = torch.linalg.solve_triangular(r, problem.start_images.to(v), upper=True, left=False)
    guards = b - min(j, k)
    if j > m - guards:
        # Rayleigh–Ritz in the start's span: its best m − guards directions, whose images are the same combinations.
        y = torch.linalg.eigh((v.T @ av + av.T @ v) / 2)[1].flip(1)[:, : m - guards]
        v, av = v @ y, av @ y
    g = torch.Generator().manual_seed(problem.seed)
    w = _orthonormal_complement(torch.randn(dim, guards, generator=g, dtype=problem.dtype).to(v), v)
    aw = problem.matvec(w) if w.shape[1] else w
    return torch.cat([v, w], 1), torch.cat([av, aw], 1), w.shape[1]


def davidson(problem: EigenProblem) -> tuple[Tensor, Tensor, SolverInfo]:
    """Top-k eigenpairs of the problem's operator: values (k,) descending, unit vectors (dim, k) with
    ``fix_signs``, and ``SolverInfo``.

    Converged when ‖K v_i − λ_i v_i‖ ≤ tol·λ_1 for every i < k; otherwise it warns and returns the
    current Ritz pairs.
    """
    matvec, dim, k, dtype = problem.matvec, problem.dim, problem.k, problem.dtype
    check_k(k, dim)
    tol = default_tol(dtype, dim) if problem.tol is None else problem.tol
    b = default_block_size(k, dim) if problem.block_size is None else min(max(problem.block_size, k), dim)
    m = min(dim, 4 * b if problem.max_basis is None else max(problem.max_basis, b + 1))
    if problem.start_images is not None:
        v, av, matvecs = _start_with_images(problem, b, m)
    else:
        g = torch.Generator().manual_seed(problem.seed)
        v = torch.randn(dim, b, generator=g, dtype=dtype).to(problem.device)
        if problem.start is not None:
            j = _check_start(problem.start, dim, b)
            v[:, :j] = problem.start.to(v)
        v = torch.linalg.qr(v)[0]
        av = matvec(v)
        matvecs = b
    h = v.T @ av
    it = 0
    while True:
        it += 1
        theta, y = torch.linalg.eigh((h + h.T) / 2)
        theta, y = theta.flip(0)[:b], y.flip(1)[:, :b]
        u, au = v @ y, av @ y
        r = au - u * theta
        res = r.norm(dim=0) / theta[0].clamp_min(torch.finfo(dtype).tiny)
        active = (res > tol).nonzero().squeeze(1)
        logger.info(
            "iteration %d: %d products, %d of %d converged, worst residual %.2e (tol %.1e)",
            it,
            matvecs,
            int((res[:k] <= tol).sum()),
            k,
            float(res[:k].max()),
            tol,
        )
        if res[:k].max() <= tol or it >= problem.max_iter:
            break
        if v.shape[1] + len(active) > m:
            # Thick restart on the b best Ritz pairs; their images come for free.
            v, av, h = u, au, torch.diag(theta)
        # Expand by the residuals still above tolerance (soft locking), best Ritz pairs first.
        w = _orthonormal_complement(r[:, active[: m - v.shape[1]]], v)
        if w.shape[1] == 0:
            break
        aw = matvec(w)
        matvecs += w.shape[1]
        h = torch.cat([torch.cat([h, v.T @ aw], 1), torch.cat([aw.T @ v, w.T @ aw], 1)], 0)
        v, av = torch.cat([v, w], 1), torch.cat([av, aw], 1)
    worst = float(res[:k].max())
    info = SolverInfo(worst <= tol, it, matvecs, worst, b, m)
    if not info.converged:
        warnings.warn(
            f"matrix-free eigensolver did not converge: {int((res[:k] > tol).sum())} of the top {k} "
            f"eigenpairs have residual ‖Kv − λv‖/λ₁ above tol = {tol:.1e} after {it} iterations and "
            f"{matvecs} kernel–vector products (worst {worst:.2e}). Raise max_iter (or tol), or use "
            f"method='dense' or 'gram' if the kernel or its factor fits in memory.",
            RuntimeWarning,
            stacklevel=3,
        )
    return theta[:k], fix_signs(u[:, :k]), info


def top_eigenpairs_matfree(matvec: Matvec, dim: int, k: int, **settings) -> tuple[Tensor, Tensor, SolverInfo]:
    """``davidson(EigenProblem(matvec, dim, k, **settings))``: the block solver on a bare operator."""
    return davidson(EigenProblem(matvec, dim, k, **settings))
