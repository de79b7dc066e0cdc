"""Which method gives the top k eigenpairs of an eNTK, and the top k of a built ``Kernel`` (docs/spec.md §1).

K = F Fᵀ has side dim (C·N for ``flatten``, N otherwise) and a factor F of width r (P for
``flatten`` and ``all_mean``, C·P for ``diag_mean``; P = number of selected parameters). Three
methods give its top k, fastest first (the solvers are in ``entk.core.solvers``):

- ``gram``        eigh of the (r, r) Gram Fᵀ F; eigenvectors F v / √λ. Needs k ≤ r < dim.
- ``dense``       eigh of the dense (dim, dim) kernel.
- ``matrix_free`` a block eigensolver on kernel–vector products (``entk.core.matfree``): neither K nor F
                  is formed; the cost is about (iterations × block size) products, each a vjp + jvp.

``EigenSizes`` holds what the choice depends on and makes it (``EigenSizes.method``): under
``method="auto"`` the first whose memory estimate fits ``max_memory_gb`` (keyword, else the
environment variable ENTK_MAX_MEMORY_GB, else 4 GB), and ``matrix_free`` when none does (warning
if even that estimate is over). Once a kernel is built, ``auto`` takes the cheapest fitting method
by flop estimates (``EigenSizes.costs_flops``): a full eigh is ≈ 9·dim³, so for k ≪ dim the block
solver on the stored kernel wins.
With s bytes per element and block b = k + oversampling:

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
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings

import torch
from torch import Tensor

from entk.core.kernel import Kernel
from entk.core.memory import check_fits, resolve_max_memory_gb
from entk.core.solvers import (
    SUBSET_SHARE,
    EigenProblem,
    Matvec,
    SolverInfo,
    check_k,
    davidson,
    default_block_size,
    default_tol,
    fix_signs,
    gram_eigenpairs,
    top_symmetric,
)

METHODS = ("auto", "gram", "dense", "matrix_free")
# Share of the budget that the kernel–vector products may use for one chunk of samples.
MATVEC_SHARE = 0.25
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
class EigenInfo:
    """Which method ran, every method's memory estimate in GB (inf: not applicable), and the solver's end."""

    method: str
    estimates_gb: dict[str, float]
    solver: SolverInfo | None = None


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def check_request(k: int, dim: int, method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is known and k is a whole number in [1, dim]."""
    check_method(method)
    check_k(k, dim)


def _eigh_flops(n: int, k: int) -> float:
    """Flop-equivalents of the top k of a symmetric (n, n) matrix by ``top_symmetric``: the tridiagonal
    reduction and back-transformation of k vectors when it computes only those, else a full eigh."""
    return _SUBSET_EIGH_FLOPS * n**3 + 2 * n**2 * k if k <= SUBSET_SHARE * n else _EIGH_FLOPS * n**3


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
            stacklevel=4,
        )
    return "matrix_free"


@dataclasses.dataclass(frozen=True)
class EigenSizes:
    """What the method for the top k of K = F Fᵀ depends on.

    dim           K's side: C·N for ``flatten``, N otherwise
    width         F's columns r: P, or C·P for ``diag_mean`` (dim for a dense kernel)
    solver_dim    the side the block solver runs on: dim, or P where it runs on Fᵀ F
    itemsize      bytes per element
    matvec_bytes  what the products hold: a block of tangents, cotangents and outputs, one chunk's share
    form          a built kernel's form, "dense" or "factor"; None for a model's kernel not built
    """

    k: int
    dim: int
    width: int
    solver_dim: int
    itemsize: int
    matvec_bytes: float
    form: str | None = None

    @classmethod
    def of_kernel(cls, kernel: Kernel, k: int) -> EigenSizes:
        """The sizes of a built kernel, whose products hold a block of its factor's width."""
        width = kernel.data.shape[1] if kernel.kind == "factor" else kernel.dim
        itemsize = kernel.data.element_size()
        held = itemsize * default_block_size(k, kernel.dim) * width
        return cls(k, kernel.dim, width, kernel.dim, itemsize, held, kernel.kind)

    @classmethod
    def of_model(
        cls, k: int, n: int, c: int, n_params: int, outputs: str, itemsize: int, max_memory_gb: float
    ) -> EigenSizes:
        """The sizes of the eNTK of ``outputs`` for N = n samples, C = c outputs and P = n_params parameters."""
        dim = c * n if outputs == "flatten" else n
        # Same nonzero spectrum on Fᵀ F; diag_mean's factor is C·P wide, so its parameter side is never smaller.
        side = n_params if outputs != "diag_mean" and n_params < dim else dim
        width = n_params * (c if outputs == "diag_mean" else 1)
        held = itemsize * default_block_size(k, side) * (n_params + 2 * n * c) + MATVEC_SHARE * max_memory_gb * 2**30
        return cls(k, dim, width, side, itemsize, held)

    @property
    def parameter_side(self) -> bool:
        """Whether the block solver runs on Fᵀ F (P, P) rather than K (dim, dim)."""
        return self.solver_dim != self.dim

    def estimates_gb(self) -> dict[str, float]:
        """Peak memory in GB per method; matrix_free at its smallest basis (inf: the method does not apply)."""
        dim, width, k, side = self.dim, self.width, self.k, self.solver_dim
        b = default_block_size(k, side)
        gram = self.form != "dense" and k <= width < dim
        estimates = {
            "gram": self.itemsize * (dim * width + 3 * width**2) if gram else math.inf,
            "dense": self.itemsize * 4 * dim**2,
            "matrix_free": self.itemsize * side * (2 * min(side, 2 * b) + 3 * b) + self.matvec_bytes,
        }
        return {name: value / 2**30 for name, value in estimates.items()}

    def costs_flops(self) -> dict[str, float]:
        """Flop estimates per method for the top k of a built kernel."""
        dim, width, k, factor = self.dim, self.width, self.k, self.form == "factor"
        b = default_block_size(k, dim)
        m = min(dim, 4 * b)
        product = 4 * dim * width if factor else 2 * dim**2
        return {
            "gram": 2 * dim * width**2 + _eigh_flops(width, k) if factor and k <= width < dim else math.inf,
            "dense": (2 * dim**2 * width if factor else 0) + _eigh_flops(dim, k),
            # Products, two Gram–Schmidt passes and the Rayleigh–Ritz eigh, per iteration. Against a factor's
            # Gram (one large GEMM) its many small steps run at about half the rate (TMS m = 40, top 80 of a
            # 5321 × 2050 factor: 2.6 s iterative against 1.35 s by the Gram at equal flop estimates); against
            # a dense kernel's eigh, itself memory-bound, they do not.
            "matrix_free": (_MATRIX_FREE_OVERHEAD if factor else 1)
            * _TYPICAL_ITERATIONS
            * (b * product + 8 * dim * m * b + _EIGH_FLOPS * m**3),
        }

    def method(self, requested: str, max_memory_gb: float) -> str:
        """``requested``, or for "auto" ``choose_method`` on these estimates (by flops for a built kernel)."""
        if requested != "auto":
            return requested
        costs = None if self.form is None else self.costs_flops()
        return choose_method(self.estimates_gb(), max_memory_gb, costs)

    def max_basis(self, max_memory_gb: float) -> int:
        """Largest basis m in [2b, 4b] (at most solver_dim) whose vectors and images fit what the budget leaves."""
        side, itemsize = self.solver_dim, self.itemsize
        b = default_block_size(self.k, side)
        free = max_memory_gb * 2**30 - self.matvec_bytes - itemsize * side * 3 * b
        return min(side, max(2 * b, min(4 * b, int(free // (2 * itemsize * side)))))

    def problem(
        self, matvec: Matvec, max_memory_gb: float, dtype: torch.dtype, device: torch.device, **settings
    ) -> EigenProblem:
        """The block solver's problem on ``solver_dim`` with the basis the budget allows; its default tolerance
        is the kernel's (dim), whichever side it runs on."""
        if settings.get("tol") is None:
            settings["tol"] = default_tol(dtype, self.dim)
        return EigenProblem(
            matvec, self.solver_dim, self.k, dtype, device, max_basis=self.max_basis(max_memory_gb), **settings
        )


def _nonzero_rows(kernel: Kernel, k: int) -> Tensor | None:
    """The rows of a factor kernel that are not exactly zero, where dropping them leaves at least k; else None."""
    # A zero row of F is a zero row and column of K, where every eigenvector of a nonzero eigenvalue
    # vanishes: solve on the other rows (outputs behind a ReLU that is off leave 79 % of the m = 40 TMS
    # factor's rows zero, 25000 → 5321) and put the zeros back.
    if kernel.kind != "factor":
        return None
    nonzero = kernel.data.ne(0).any(dim=1)
    return nonzero.nonzero().squeeze(1) if k <= int(nonzero.sum()) < kernel.dim else None


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
    check_request(k, kernel.dim, method)
    full_dim, rows = kernel.dim, _nonzero_rows(kernel, k)
    if rows is not None:
        kernel = dataclasses.replace(kernel, data=kernel.data[rows])
    f, budget = kernel.data, resolve_max_memory_gb(max_memory_gb)
    sizes = EigenSizes.of_kernel(kernel, k)
    estimates = sizes.estimates_gb()
    chosen = sizes.method(method, budget)
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
        vals, vecs = gram_eigenpairs(f, k)
    elif chosen == "dense":
        vals, vecs = top_symmetric(kernel.dense(), k)
    else:
        problem = EigenProblem(
            kernel.matvec(), kernel.dim, k, f.dtype, f.device, tol, max_iter, seed, max_basis=sizes.max_basis(budget)
        )
        vals, vecs, solver = davidson(problem)
    if rows is not None:
        vecs = vecs.new_zeros(full_dim, k).index_copy_(0, rows, vecs)
    vecs = fix_signs(vecs)
    return (vals, vecs, EigenInfo(chosen, estimates, solver)) if return_info else (vals, vecs)
