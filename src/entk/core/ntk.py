"""``NTK``: one object that binds a model and its inputs, and gives every kernel and spectrum of it.

    ntk = entk.NTK(model, x, outputs="diag_mean", groups="per_module")
    ntk.kernel()            # the full eNTK, a ``Kernel`` (dense or factor form; .dense() for the matrix)
    ntk.layers()            # {group: Kernel}: the layerwise eNTK, summing to the full one
    ntk.eigenpairs(200, "fc1")
    ntk.matvec()            # V (dim, b) → K V

Each parameter's Jacobian structure is found once (``entk.core.trace.plan``: structured where it enters
the forward pass through recognised linear operations, ``torch.func`` otherwise), and the kernel of
each *atom* (parameters that belong to the same groups) is computed once, in one pass over the
samples for all atoms, and reused by the full kernel, every group's kernel and every eigenpair
call. Where the kernels would not fit the memory budget, ``eigenpairs`` and ``matvec`` run
matrix-free instead (``entk.core.matfree``).

``outputs`` against neural-tangents' ``trace_axes``: see ``entk.core.kernel``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from entk.core import generic, structured
from entk.core.checks import (
    analysed_model,
    check_inputs,
    check_model,
    check_output_weights,
    eval_mode,
    finite_outputs,
    guarded,
)
from entk.core.eigen import MATVEC_SHARE, EigenInfo, EigenSizes, check_request, kernel_eigenpairs
from entk.core.kernel import Kernel, check_outputs, check_weights, sum_kernels
from entk.core.matfree import Products, kernel_vectors, ntk_matvec, param_matvec, products
from entk.core.memory import budget_bytes, check_fits, resolve_max_memory_gb
from entk.core.selection import GroupSpec, atoms, layer_groups, module_name, selected_names, to_model
from entk.core.solvers import SolverInfo, davidson
from entk.core.trace import Plan, plan

Group = str | list[str] | None

logger = logging.getLogger(__name__)


class NTK:
    """The empirical NTK of ``model`` on ``x`` (N, ...): K[(n,c),(m,d)] = ∂f_c(x_n)/∂θ · ∂f_d(x_m)/∂θ.

    params         parameter or module names whose θ counts (default all)
    groups         "per_module" (default), "per_tensor", or {name: parameter/module names, None = all}
    outputs        "flatten" (C·N, C·N), "diag_mean" or "all_mean" (N, N); see ``entk.core.kernel``
    output_weights (C,): f_c → w_c f_c before the kernel (the paper's importance rescaling)
    max_memory_gb  working-memory budget (``entk.core.memory``): chunks, blocks, the solver's basis
    device         compute there (a copy of the model is moved; the caller's model stays put)

    The model runs in eval mode for every computation and its modes are restored afterwards. A forward
    that returns a tuple or a mapping is analysed at its first element or its "logits"
    (``entk.core.checks.analysed_model``).
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        *,
        params: list[str] | None = None,
        groups: GroupSpec = None,
        outputs: str = "flatten",
        output_weights: Tensor | None = None,
        max_memory_gb: float | None = None,
        device: torch.device | str | None = None,
    ):
        check_outputs(outputs)
        x = torch.as_tensor(x)
        check_inputs(x)
        check_model(model)
        check_output_weights(output_weights)
        if device is not None and torch.device(device) != next(model.parameters()).device:
            model = copy.deepcopy(model).to(device)
        self.max_memory_gb = resolve_max_memory_gb(max_memory_gb)
        self.x = to_model(model, x)
        with eval_mode(model):
            model = analysed_model(model, self.x[:1])
            self.n_outputs = finite_outputs(model, self.x)
        self.model, self.outputs = model, outputs
        self.names = selected_names(model, params)
        self.groups = layer_groups(model, groups, self.names)
        weights = check_weights(output_weights, self.n_outputs)
        ref = next(model.parameters())
        self.weights = None if weights is None else weights.to(device=ref.device, dtype=ref.dtype)
        self.n_samples = self.x.shape[0]
        self.dim = self.n_samples * (self.n_outputs if outputs == "flatten" else 1)
        self._atoms = atoms(self.names, self.groups)
        self._atom_kernels: dict[tuple[str, ...], Kernel] = {}
        self._kernels: dict[tuple[str, ...], Kernel] = {}
        self._plan: Plan | None = None

    # --- what each parameter takes ---

    def _planned(self) -> Plan:
        if self._plan is None:
            with eval_mode(self.model):
                self._plan = plan(self.model, self.x, self.names)
        return self._plan

    @property
    def paths(self) -> dict[str, str]:
        """{parameter: "structured" | "generic"}: which path computes its Jacobian structure."""
        on_structured = self._planned().structured
        return {n: "structured" if n in on_structured else "generic" for n in self.names}

    def names_of(self, group: Group = None) -> list[str]:
        """The parameter names of a group: None = every selected one, a group's name, or a list of names."""
        if group is None:
            return list(self.names)
        if isinstance(group, str):
            if group not in self.groups:
                raise ValueError(f"unknown group {group!r}; groups: {sorted(self.groups)} (or None for all)")
            return list(self.groups[group])
        chosen = set(selected_names(self.model, list(group)))
        outside = sorted(chosen - set(self.names))
        if outside:
            raise ValueError(f"parameters {outside} are outside this NTK's selection (params=...)")
        return [n for n in self.names if n in chosen]

    # --- kernels ---

    def _numel(self, names: list[str]) -> int:
        params = dict(self.model.named_parameters())
        return sum(params[n].numel() for n in names)

    def _width(self, names: list[str]) -> int:
        """Width of the factor F of these parameters' kernel: P, or C·P for diag_mean."""
        return self._numel(names) * (self.n_outputs if self.outputs == "diag_mean" else 1)

    def _storage(self, atoms_: list[tuple[str, ...]]) -> int:
        """Bytes of the compact kernels of these atoms, a factor or dense whichever is smaller."""
        itemsize = next(self.model.parameters()).element_size()
        return sum(self.dim * min(self.dim, self._width(list(a))) * itemsize for a in atoms_)

    def _compute(self, atoms_: list[tuple[str, ...]]) -> dict[tuple[str, ...], Kernel]:
        """The kernels of these atoms, in one pass over the samples for all of them."""
        names = [n for a in atoms_ for n in a]
        check_fits(
            self._storage(atoms_) / 2**30, f"the kernels of {len(names)} parameter(s) (dim {self.dim})", self.x.device
        )
        on_structured, probe = self._planned()
        budget = budget_bytes(self.max_memory_gb)
        fast = [n for n in names if n in on_structured]
        slow = [n for n in names if n not in on_structured]
        with eval_mode(self.model):
            atom_of = {n: i for i, a in enumerate(atoms_) for n in a}
            per_block = (
                structured.kernels(
                    self.model, self.x, fast, probe, self.weights, self.outputs, self.n_outputs, budget, atom_of
                )
                if fast
                else {}
            )
            jac = (
                generic.jacobians(self.model, self.x, slow, self.weights, self.n_outputs, budget, self.outputs)
                if slow
                else {}
            )
        result = {}
        for a in atoms_:
            parts = [k for block, k in per_block.items() if block[0] in a]
            rest = [jac[n] for n in a if n in jac]
            if rest:
                parts.append(generic.jacobian_kernel(torch.cat(rest, dim=2), self.outputs, self.n_outputs))
            result[a] = sum_kernels(parts)
        return result

    def _ensure(self, names: list[str]) -> list[tuple[str, ...]]:
        """The atoms making up ``names`` with their kernels computed (all missing ones at once, if they fit)."""
        wanted = set(names)
        needed = [a for a in self._atoms if wanted & set(a)]
        if any(not set(a) <= wanted for a in needed):
            return []
        missing = [a for a in needed if a not in self._atom_kernels]
        if missing:
            rest = [a for a in self._atoms if a not in self._atom_kernels]
            fits = self._storage(rest) <= budget_bytes(self.max_memory_gb)
            self._atom_kernels.update(self._compute(rest if fits else missing))
        return needed

    def kernel(self, group: Group = None) -> Kernel:
        """The eNTK of a group (None: all selected parameters) in its most compact exact form."""
        names = self.names_of(group)
        key = tuple(names)
        if key not in self._kernels:
            needed = self._ensure(names)
            if needed:
                self._kernels[key] = sum_kernels([self._atom_kernels[a] for a in needed])
            else:
                # Names that cut across atoms: their own pass, as atoms of one parameter each.
                self._kernels[key] = sum_kernels(list(self._compute([(n,) for n in names]).values()))
        return self._kernels[key]

    def layers(self) -> dict[str, Kernel]:
        """{group: its Kernel} for every group (every atom's kernel in one pass)."""
        self._ensure(self.names)
        return {g: self.kernel(g) for g in self.groups}

    # --- spectra and products ---

    def eigenpairs(
        self,
        k: int,
        group: Group = None,
        *,
        method: str = "auto",
        tol: float | None = None,
        max_iter: int = 200,
        seed: int = 0,
        return_info: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, EigenInfo]:
        """Top-k eigenpairs of a group's eNTK: values descending (k,), vectors (dim, k) [, ``EigenInfo``].

        ``method`` is "auto", "gram", "dense" or "matrix_free" (``entk.core.eigen``). Under "auto" a kernel
        already computed is used as it is; otherwise the kernel is built if an exact method fits the
        budget, and the eigenpairs come matrix-free if none does. ``tol``, ``max_iter`` and ``seed``
        steer the matrix-free solver only.
        """
        check_request(k, self.dim, method)
        names = self.names_of(group)
        itemsize = dict(self.model.named_parameters())[names[0]].element_size()
        sizes = EigenSizes.of_model(
            k, self.n_samples, self.n_outputs, self._numel(names), self.outputs, itemsize, self.max_memory_gb
        )
        estimates = sizes.estimates_gb()
        built = tuple(names) in self._kernels
        chosen = "built" if built and method == "auto" else sizes.method(method, self.max_memory_gb)
        if chosen != "built" and math.isfinite(estimates[chosen]):
            kernel_gb = 0 if built or chosen == "matrix_free" else self._storage([tuple(names)]) / 2**30
            need = estimates[chosen] + kernel_gb
            check_fits(need, f"the top {k} eigenpairs by {chosen} (kernel dim {self.dim})", self.x.device)
        settings = {"tol": tol, "max_iter": max_iter, "seed": seed}
        if chosen != "matrix_free":
            vals, vecs, info = kernel_eigenpairs(
                self.kernel(group), k, method=method, max_memory_gb=self.max_memory_gb, return_info=True, **settings
            )
            info = EigenInfo(info.method, estimates, info.solver)
        else:
            vals, vecs, solver = self._matrix_free(names, sizes, settings)
            info = EigenInfo("matrix_free", estimates, solver)
        return (vals, vecs, info) if return_info else (vals, vecs)

    def _products(self, names: list[str], max_memory_gb: float) -> Products:
        return products(
            self.model,
            self.x,
            params=names,
            outputs=self.outputs,
            output_weights=self.weights,
            max_memory_gb=max_memory_gb,
        )

    def _matrix_free(self, names: list[str], sizes: EigenSizes, settings: dict) -> tuple[Tensor, Tensor, SolverInfo]:
        """Top k by the block solver on the side ``sizes`` chose: K itself, or Fᵀ F (P, P) mapped back."""
        pb = self._products(names, MATVEC_SHARE * self.max_memory_gb)
        on_params = sizes.parameter_side
        logger.info(
            "top-%d eNTK eigenpairs by matrix_free on the %s side (%d)",
            sizes.k,
            "parameter" if on_params else "kernel",
            sizes.solver_dim,
        )
        ref = next(self.model.parameters())
        matvec = param_matvec(pb) if on_params else ntk_matvec(pb)
        vals, vecs, solver = davidson(sizes.problem(matvec, self.max_memory_gb, ref.dtype, ref.device, **settings))
        if on_params:
            return vals, kernel_vectors(pb, vecs), dataclasses.replace(solver, side="parameter")
        return vals, vecs, solver

    def matvec(self, group: Group = None) -> Callable[[Tensor], Tensor]:
        """V (dim, b) → K V for a group's eNTK: from its kernel if computed, else matrix-free."""
        names = self.names_of(group)
        if tuple(names) in self._kernels:
            return self._kernels[tuple(names)].matvec()
        return ntk_matvec(self._products(names, self.max_memory_gb))


# --- One-call conveniences on NTK ---


@guarded
def compact_ntk(model: nn.Module, x: Tensor, *, params: list[str] | None = None, **kw) -> Kernel:
    """``NTK(model, x, params=..., outputs=..., output_weights=..., max_memory_gb=...).kernel()``."""
    return NTK(model, x, params=params, **kw).kernel()


@guarded
def empirical_ntk(model: nn.Module, x: Tensor, *, params: list[str] | None = None, **kw) -> Tensor:
    """Dense eNTK: (C·N, C·N) class-major for ``flatten``, (N, N) for ``diag_mean``/``all_mean``."""
    return NTK(model, x, params=params, **kw).kernel().dense()


@guarded
def layer_ntks(model: nn.Module, x: Tensor, layers: dict[str, list[str] | None], **kw) -> dict[str, Kernel]:
    """Compact eNTK per named layer ({name: parameter/module names, None = all}), one pass for all."""
    return NTK(model, x, groups=layers, **kw).layers()


@guarded
def layerwise_ntk(model: nn.Module, x: Tensor, **kw) -> dict[str, Tensor]:
    """Dense eNTK per module that directly owns parameters ('' = the root); they sum to the full one."""
    return {module_name(g): k.dense() for g, k in NTK(model, x, **kw).layers().items()}


@guarded
def top_eigenpairs(model: nn.Module, x: Tensor, k: int, *, params: list[str] | None = None, **kw):
    """Top-k eNTK eigenpairs: ``NTK(model, x, params=..., outputs=..., output_weights=...,
    max_memory_gb=...).eigenpairs(k, method=..., tol=..., max_iter=..., seed=..., return_info=...)``."""
    solver = {key: kw.pop(key) for key in ("method", "tol", "max_iter", "seed", "return_info") if key in kw}
    return NTK(model, x, params=params, **kw).eigenpairs(k, **solver)
