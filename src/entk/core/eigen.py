"""Top eigenpairs of an eNTK and the spectral cliff (docs/spec.md, Notation and §1).

K = F Fᵀ has side dim (C·N for ``flatten``, N otherwise) and a factor F of width r (P for
``flatten`` and ``all_mean``, C·P for ``diag_mean``; P = number of selected parameters). Three
methods give its top k, fastest first:

- ``gram``        eigh of the (r, r) Gram Fᵀ F; eigenvectors F v / √λ. Needs k ≤ r < dim.
- ``dense``       eigh of the dense (dim, dim) kernel.
- ``matrix_free`` a block eigensolver on kernel–vector products (``entk.core.matfree``): neither K nor F
                  is formed; the cost is about (iterations × block size) products, each a vjp + jvp.

``method="auto"`` takes the first whose memory estimate fits ``max_memory_gb`` (keyword, else the
environment variable ENTK_MAX_MEMORY_GB, else 4 GB), and ``matrix_free`` when none does (warning
if even that estimate is over). Once a kernel is built (``kernel_eigenpairs``), ``auto`` takes the
cheapest fitting method by flop estimates (``cost_estimates``): a full eigh is ≈ 9·dim³, so for
k ≪ dim the block solver on the stored kernel wins (the top 200 of a 12769² kernel: 6 s against
183 s on 2 cores). With s bytes per element and block b = k + oversampling:

- gram:        s·(dim·r + 3·r²)          the factor; the Gram, eigh's eigenvectors and workspace
- dense:       s·4·dim²                  the kernel, eigh's copy, eigenvectors and workspace
- matrix_free: s·dim·(2·m + 3·b) + mv    a basis of m vectors and their images (m = 2b here; the
                                         solver grows it to 4b where the budget allows), the Ritz
                                         block and its residuals; mv = s·b·(P + 2·C·N) for
                                         tangents, cotangents and outputs, plus a quarter of the
                                         budget for one chunk of samples' autograd intermediates;
                                         for ``flatten``/``all_mean`` with P < dim the solver runs
                                         on Fᵀ F (``entk.core.matfree.param_matvec``) and dim → P here

Building the kernel for ``gram``/``dense`` is ``entk.NTK``'s business: it gets the same
``max_memory_gb`` for its working memory, which these estimates do not count. Its factor may be
narrower than r (diag_mean compression), so ``auto`` lets the built kernel's form decide between
gram and dense; where even dense is estimated not to fit, ``auto`` cannot know that the kernel
would compress and goes matrix_free: pass method="gram" for a kernel known to compress.

The matrix-free solver is a block Davidson method without preconditioner (block Lanczos with full
reorthogonalisation and thick restart), written here rather than taken from scipy because
``scipy.sparse.linalg.lobpcg`` silently forms the dense matrix from the operator when
dim < 5 × block (e.g. the top 200 of an 841² kernel) and requires its guard vectors to converge
too; on the flattened ModMLP(29) kernel (top 50, block 64, same tolerance) it took 90 iterations
and 1237 kernel–vector products against 31 and 1115 for this solver. ARPACK's ``eigsh`` is
single-vector Lanczos: it can miss copies of an exactly repeated eigenvalue (output-layer kernels
repeat each eigenvalue C times) and cannot batch products. A block at least as large as a
multiplicity finds every copy, and one block shares one batched vjp/jvp.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import warnings

import torch
from torch import Tensor, nn

from entk.core.kernel import Kernel
from entk.core.matfree import Matvec, factor_matvec, ntk_matvec, param_matvec
from entk.core.memory import check_fits, resolve_max_memory_gb

METHODS = ("auto", "gram", "dense", "matrix_free")
# Share of the budget that the kernel–vector products may use for one chunk of samples.
_MATVEC_SHARE = 0.25
# A full eigh (tridiagonalisation with eigenvectors, half of it matrix–vector bound) cost as many
# seconds as ≈ 9·n³ GEMM flops on a 12769² float32 kernel (2 CPU cores: 183 s); the block solver
# took 4 to 8 iterations on the paper's kernels.
_EIGH_FLOPS = 9
_MATRIX_FREE_OVERHEAD = 2
# The subset solver's tridiagonal reduction is 4/3 n³ flops but half of them matrix-vector (memory-
# bound): measured a third of a full eigh's time (2050²: 0.40 s against 1.23 s), so 3 n³ against 9 n³.
_SUBSET_EIGH_FLOPS = 3
_TYPICAL_ITERATIONS = 8

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SolverInfo:
    """How the matrix-free solver ended; max_residual = max_i≤k ‖K v_i − λ_i v_i‖ / λ_1 on the side it ran on
    ("kernel": K itself, "parameter": Fᵀ F)."""

    converged: bool
    iterations: int
    matvecs: int
    max_residual: float
    block_size: int
    max_basis: int
    side: str = "kernel"


@dataclasses.dataclass(frozen=True)
class EigenInfo:
    """Which method ran, every method's memory estimate in GB (inf: not applicable), and the solver's end."""

    method: str
    estimates_gb: dict[str, float]
    solver: SolverInfo | None = None


def fix_signs(vectors: Tensor) -> Tensor:
    """Flip each column (dim, k) so that its entry of largest magnitude is positive."""
    idx = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[idx, torch.arange(vectors.shape[1], device=vectors.device)])
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def check_k(k: int, dim: int) -> None:
    """Raise ``ValueError`` unless k is a whole number of eigenpairs in [1, dim]."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be a whole number of eigenpairs, got {k!r}")
    if not 1 <= k <= dim:
        raise ValueError(f"k must lie in [1, {dim}] (the kernel's dimension), got k = {k}")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def default_tol(dtype: torch.dtype, dim: int) -> float:
    """Residual tolerance relative to λ_1: 1e-6, or 10·eps·√dim where that is larger (float32)."""
    # Rounding in the products leaves residuals of about eps·√dim·λ_1 (float32 at dim 1.44 M
    # stalled at 1.6e-4), so a tighter tolerance could never be met.
    return max(1e-6, 10 * torch.finfo(dtype).eps * math.sqrt(dim))


def default_block_size(k: int, dim: int) -> int:
    """Block size b = k + oversampling (≥ 8 guard vectors, 25 % for large k), at most dim."""
    return min(dim, k + max(8, k // 4))


def memory_estimates_gb(
    dim: int, width: int, k: int, itemsize: int, matvec_bytes: float, solver_dim: int | None = None
) -> dict[str, float]:
    """Peak memory in GB per method for the top k of K = F Fᵀ, F (dim, width); matrix_free at its smallest
    basis of vectors of length ``solver_dim`` (default dim; width when it iterates on Fᵀ F)."""
    side = dim if solver_dim is None else solver_dim
    b = default_block_size(k, side)
    estimates = {
        "gram": itemsize * (dim * width + 3 * width**2) if k <= width < dim else math.inf,
        "dense": itemsize * 4 * dim**2,
        "matrix_free": itemsize * side * (2 * min(side, 2 * b) + 3 * b) + matvec_bytes,
    }
    return {name: value / 2**30 for name, value in estimates.items()}


def _eigh_flops(n: int, k: int) -> float:
    """Flop-equivalents of the top k of a symmetric (n, n) matrix by ``_top_symmetric``: the tridiagonal
    reduction and back-transformation of k vectors when it computes only those, else a full eigh."""
    return _SUBSET_EIGH_FLOPS * n**3 + 2 * n**2 * k if k <= SUBSET_SHARE * n else _EIGH_FLOPS * n**3


def cost_estimates(dim: int, width: int, k: int, kind: str) -> dict[str, float]:
    """Flop estimates per method for the top k of a built kernel: ``kind`` "dense" (dim, dim) or "factor"
    (dim, width)."""
    b = default_block_size(k, dim)
    m = min(dim, 4 * b)
    product = 2 * dim**2 if kind == "dense" else 4 * dim * width
    return {
        "gram": 2 * dim * width**2 + _eigh_flops(width, k) if kind == "factor" and k <= width < dim else math.inf,
        "dense": (2 * dim**2 * width if kind == "factor" else 0) + _eigh_flops(dim, k),
        # Products, two Gram–Schmidt passes and the Rayleigh–Ritz eigh, per iteration. Against a factor's
        # Gram (one large GEMM) its many small steps run at about half the rate (TMS m = 40, top 80 of a
        # 5321 × 2050 factor: 2.6 s iterative against 1.35 s by the Gram at equal flop estimates); against
        # a dense kernel's eigh, itself memory-bound, they do not.
        "matrix_free": (_MATRIX_FREE_OVERHEAD if kind == "factor" else 1)
        * _TYPICAL_ITERATIONS
        * (b * product + 8 * dim * m * b + _EIGH_FLOPS * m**3),
    }


def choose_method(estimates_gb: dict[str, float], max_memory_gb: float, costs: dict[str, float] | None = None) -> str:
    """The fastest method whose estimate fits the budget (by ``costs`` if given, else gram, dense, matrix_free);
    matrix_free (with a warning) when none fits."""
    fits = [m for m in ("gram", "dense", "matrix_free") if estimates_gb[m] <= max_memory_gb]
    if costs is not None and fits:
        return min(fits, key=lambda m: costs[m])
    for method in ("gram", "dense"):
        if method in fits:
            return method
    if estimates_gb["matrix_free"] > max_memory_gb:
        warnings.warn(
            f"even the matrix-free eigensolver needs about {estimates_gb['matrix_free']:.2f} GB, above "
            f"max_memory_gb = {max_memory_gb:g}; running it anyway (lower k or raise the budget)",
            UserWarning,
            stacklevel=3,
        )
    return "matrix_free"


def _max_basis(max_memory_gb: float, dim: int, k: int, itemsize: int, matvec_bytes: float) -> int:
    """Largest basis m in [2b, 4b] (at most dim) whose vectors and images fit what the budget leaves."""
    b = default_block_size(k, dim)
    free = max_memory_gb * 2**30 - matvec_bytes - itemsize * dim * 3 * b
    return min(dim, max(2 * b, min(4 * b, int(free // (2 * itemsize * dim)))))


def _orthonormal_complement(w: Tensor, v: Tensor) -> Tensor:
    """Orthonormal basis (dim, ≤ m) of the part of w (dim, m) orthogonal to the orthonormal v (dim, j)."""
    # Classical Gram–Schmidt twice is orthogonal to working precision ("twice is enough").
    for _ in range(2):
        w = w - v @ (v.T @ w)
    w = w / w.norm(dim=0).clamp_min(torch.finfo(w.dtype).tiny)
    q, r = torch.linalg.qr(w)
    # A column already (numerically) in the span adds only noise: drop it.
    keep = r.diagonal().abs() > math.sqrt(torch.finfo(w.dtype).eps)
    return q[:, keep]


def top_eigenpairs_matfree(
    matvec: Matvec,
    dim: int,
    k: int,
    *,
    tol: float | None = None,
    max_iter: int = 200,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    block_size: int | None = None,
    max_basis: int | None = None,
) -> tuple[Tensor, Tensor, SolverInfo]:
    """Top-k eigenpairs of a symmetric PSD operator V (dim, b) -> K V: values (k,) descending, unit
    vectors (dim, k) with ``fix_signs``, and ``SolverInfo``.

    Converged when ‖K v_i − λ_i v_i‖ ≤ tol·λ_1 for every i < k; otherwise it warns and returns the
    current Ritz pairs. The basis holds at most ``max_basis`` vectors (default 4 blocks) and their images.
    """
    check_k(k, dim)
    tol = default_tol(dtype, dim) if tol is None else tol
    b = default_block_size(k, dim) if block_size is None else min(max(block_size, k), dim)
    m = min(dim, 4 * b if max_basis is None else max(max_basis, b + 1))
    g = torch.Generator().manual_seed(seed)
    # Drawn on the CPU so that a seed gives the same start on every device.
    v = torch.linalg.qr(torch.randn(dim, b, generator=g, dtype=dtype).to(device))[0]
    av = matvec(v)
    h = v.T @ av
    matvecs, it = b, 0
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
        if res[:k].max() <= tol or it >= max_iter:
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
            stacklevel=2,
        )
    return theta[:k], fix_signs(u[:, :k]), info


# Below this share of the spectrum a CPU eigensolver that computes only the wanted eigenpairs
# (LAPACK's MRRR, dsyevr) beats a full eigh: 3× for the top 80 of a 2050² Gram, no gain for 200 of 841.
SUBSET_SHARE = 1 / 8


def _top_symmetric(a: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top k eigenpairs of a symmetric (n, n) matrix, descending: values (k,), vectors (n, k)."""
    n = a.shape[0]
    if a.device.type == "cpu" and k <= SUBSET_SHARE * n:
        import scipy.linalg

        evals, evecs = scipy.linalg.eigh(a.numpy(), subset_by_index=[n - k, n - 1], driver="evr")
        return torch.from_numpy(evals[::-1].copy()), torch.from_numpy(evecs[:, ::-1].copy())
    evals, evecs = torch.linalg.eigh(a)
    return evals.flip(0)[:k], evecs.flip(1)[:, :k]


def _gram_eigenpairs(f: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top k of F Fᵀ from the (r, r) Gram of F (dim, r): values (k,), unit vectors (dim, k)."""
    evals, evecs = _top_symmetric(f.T @ f, k)
    vecs = f @ evecs
    # Normalising columns directly stays finite where λ is at round-off level.
    return evals, vecs / vecs.norm(dim=0).clamp_min(torch.finfo(f.dtype).tiny)


def _dense_eigenpairs(kernel: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top k of a dense symmetric (dim, dim) kernel: values (k,), vectors (dim, k)."""
    return _top_symmetric(kernel, k)


def kernel_eigenpairs(
    kernel: Kernel,
    k: int,
    *,
    method: str = "auto",
    max_memory_gb: float | None = None,
    tol: float | None = None,
    max_iter: int = 200,
    seed: int = 0,
    return_info: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, EigenInfo]:
    """Top-k eigenpairs of a ``Kernel``: eigenvalues descending (k,), eigenvectors (dim, k) [, ``EigenInfo``].

    A factor F (dim, r) with k ≤ r < dim is never expanded under ``auto``: the nonzero eigenvalues
    of F Fᵀ are those of the (r, r) Gram Fᵀ F (paper, Notation). ``tol``, ``max_iter`` and ``seed``
    steer the matrix-free solver only.
    """
    check_method(method)
    check_k(k, kernel.dim)
    full_dim, rows = kernel.dim, None
    if kernel.kind == "factor":
        # An exactly zero row of F is a zero row and column of K, where every eigenvector of a nonzero
        # eigenvalue vanishes: solve on the other rows (outputs behind a ReLU that is off leave 79 % of
        # the m = 40 TMS factor's rows zero, 25000 → 5321) and put the zeros back.
        nonzero = kernel.data.ne(0).any(dim=1)
        if k <= int(nonzero.sum()) < full_dim:
            rows = nonzero.nonzero().squeeze(1)
            kernel = dataclasses.replace(kernel, data=kernel.data[rows])
    f, budget = kernel.data, resolve_max_memory_gb(max_memory_gb)
    width = f.shape[1] if kernel.kind == "factor" else kernel.dim
    b, itemsize = default_block_size(k, kernel.dim), f.element_size()
    estimates = memory_estimates_gb(kernel.dim, width, k, itemsize, itemsize * b * width)
    if kernel.kind == "dense":
        estimates["gram"] = math.inf
    costs = cost_estimates(kernel.dim, width, k, kernel.kind)
    chosen = choose_method(estimates, budget, costs) if method == "auto" else method
    if math.isfinite(estimates[chosen]):  # inf: gram does not apply, said below
        check_fits(estimates[chosen], f"the top {k} eigenpairs by {chosen} (kernel dim {kernel.dim})", f.device)
    logger.info("top-%d eigenpairs of a %s kernel (dim %d) by %s; GB %s", k, kernel.kind, kernel.dim, chosen, estimates)
    solver = None
    if chosen == "gram":
        if math.isinf(estimates["gram"]):
            raise ValueError(
                f"method='gram' needs a factor kernel F (dim, r) with k ≤ r < dim; this one is "
                f"{kernel.kind} {tuple(f.shape)} with k = {k}: use method='dense' or 'matrix_free'"
            )
        vals, vecs = _gram_eigenpairs(f, k)
    elif chosen == "dense":
        vals, vecs = _dense_eigenpairs(kernel.dense(), k)
    else:
        matvec = kernel.matvec()
        m = _max_basis(budget, kernel.dim, k, itemsize, itemsize * b * width)
        vals, vecs, solver = top_eigenpairs_matfree(
            matvec, kernel.dim, k, tol=tol, max_iter=max_iter, seed=seed, dtype=f.dtype, device=f.device, max_basis=m
        )
    if rows is not None:
        vecs = vecs.new_zeros(full_dim, k).index_copy_(0, rows, vecs)
    vecs = fix_signs(vecs)
    return (vals, vecs, EigenInfo(chosen, estimates, solver)) if return_info else (vals, vecs)


def matvec_bytes(k: int, size: int, n: int, c: int, n_params: int, itemsize: int, budget: float) -> float:
    """Bytes the products hold: a block of tangents (b, P), cotangents and outputs (b, N, C), one chunk's share."""
    return itemsize * default_block_size(k, size) * (n_params + 2 * n * c) + _MATVEC_SHARE * budget * 2**30


def on_parameter_side(outputs: str, n_params: int, dim: int) -> bool:
    """Whether the block solver runs on Fᵀ F (P, P) rather than K (dim, dim)."""
    # Same nonzero spectrum; diag_mean's factor is C·P wide, so its parameter side is never smaller.
    return outputs != "diag_mean" and n_params < dim


def matrix_free_eigenpairs(
    model: nn.Module,
    x: Tensor,
    k: int,
    params: list[str] | None,
    outputs: str,
    output_weights: Tensor | None,
    budget: float,
    sizes: tuple[int, int, int, int],
    **solver_kw,
) -> tuple[Tensor, Tensor, SolverInfo]:
    """Top k by the block solver on whichever side of K = F Fᵀ is smaller: K itself, or Fᵀ F (P, P).
    ``sizes`` is (N samples, C outputs, P selected parameters, bytes per element)."""
    n, c, n_params, itemsize = sizes
    dim = c * n if outputs == "flatten" else n
    kw = {
        "params": params,
        "outputs": outputs,
        "output_weights": output_weights,
        "max_memory_gb": _MATVEC_SHARE * budget,
    }
    ref = next(model.parameters())
    on_params = on_parameter_side(outputs, n_params, dim)
    matvec, size = param_matvec(model, x, **kw) if on_params else (ntk_matvec(model, x, **kw), dim)
    held = matvec_bytes(k, size, n, c, n_params, itemsize, budget)
    logger.info(
        "top-%d eNTK eigenpairs by matrix_free on the %s side (%d)", k, "parameter" if on_params else "kernel", size
    )
    if solver_kw.get("tol") is None:
        # The same kernel gets the same default tolerance whichever side the solver runs on.
        solver_kw["tol"] = default_tol(ref.dtype, dim)
    vals, vecs, solver = top_eigenpairs_matfree(
        matvec,
        size,
        k,
        dtype=ref.dtype,
        device=ref.device,
        max_basis=_max_basis(budget, size, k, itemsize, held),
        **solver_kw,
    )
    if on_params:
        solver = dataclasses.replace(solver, side="parameter")
        # u ↦ F u / √λ; normalising the columns directly stays finite where λ is at round-off level.
        vecs = factor_matvec(model, x, **kw)(vecs)
        vecs = fix_signs(vecs / vecs.norm(dim=0).clamp_min(torch.finfo(vecs.dtype).tiny))
    return vals, vecs, solver
