"""Language models (docs/spec.md §4): the per-module eNTK of a causal LM's final hidden state.

The paper's operator (v4 §4) for one module of a causal language model is

    K = S^½ J Jᵀ S^½,   J = ∂ h_final[:, position] / ∂ θ_module   (N·C rows, class-major c·N + n)

with h_final the last hidden state after the final norm (C = d_model), and S = UᵀU (C, C) from the
unembedding U (V, C), so that K's nonzero spectrum is that of the flattened eNTK of the logits.
``module_operator`` binds a model, token ids (N, T) and one module; its ``eigenpairs`` and
``matvec`` are what the workflow's language-model views and the benchmarks call. ``lanczos`` is the
author's solver (50 steps, full reorthogonalisation), kept for comparison with the converged one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import entk


def base_model(model: nn.Module) -> nn.Module:
    """The decoder stack of a Hugging Face causal LM (``model.model``, ``model.transformer``, …)."""
    prefix = getattr(model, "base_model_prefix", None)
    inner = getattr(model, prefix, None) if prefix else None
    if not isinstance(inner, nn.Module):
        raise TypeError(
            f"{type(model).__name__} is not a Hugging Face causal LM with a base model "
            "(load it with AutoModelForCausalLM)"
        )
    return inner


def load_causal_lm(source, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A causal LM from a local Hugging Face directory (``config.json`` + weights, ``local_files_only``)
    or from a config (a ``PretrainedConfig``: random weights), with eager attention, in eval mode."""
    from transformers import AutoModelForCausalLM

    if isinstance(source, str | Path):
        model = AutoModelForCausalLM.from_pretrained(
            source, local_files_only=True, attn_implementation="eager", dtype=dtype
        )
    else:
        source._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(source, dtype=dtype)
    return model.eval()


def module_roles(model: nn.Module) -> dict[str, list[str]]:
    """Module names by role, one per block in order: {"mlp_out": [...], "attn_out": [...], "embedding": [name]}."""
    names = [n for n, _ in model.named_modules()]
    embedding = next(n for n, m in model.named_modules() if m is model.get_input_embeddings())
    return {
        "mlp_out": [n for n in names if n.endswith("mlp.down_proj")],
        "attn_out": [n for n in names if n.endswith("self_attn.o_proj")],
        "embedding": [embedding],
    }


def unembedding(model: nn.Module) -> Tensor:
    """The unembedding U (V, C) of a causal LM, tied to the embedding or not."""
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise TypeError(f"{type(model).__name__} has no output embedding (an LM head) to take U from")
    return head.weight.detach()


def metric_sqrt(metric: Tensor) -> Tensor:
    """S^½ (C, C) of a symmetric positive semi-definite metric S, by ``eigh`` with eigenvalues clamped at 0."""
    if metric.ndim != 2 or metric.shape[0] != metric.shape[1]:
        raise ValueError(f"an output metric must be a square (C, C) matrix, got shape {tuple(metric.shape)}")
    vals, vecs = torch.linalg.eigh((metric + metric.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


class FinalHidden(nn.Module):
    """ids (N, T) → the final normed hidden state at ``position`` (N, C), times S^½ when given."""

    def __init__(self, lm: nn.Module, position: int = -1, metric_sqrt: Tensor | None = None):
        super().__init__()
        self.lm, self.position = lm, position
        self.register_buffer("metric_sqrt", metric_sqrt)

    def forward(self, ids: Tensor) -> Tensor:
        h = base_model(self.lm)(input_ids=ids).last_hidden_state[:, self.position]
        return h if self.metric_sqrt is None else h @ self.metric_sqrt


@dataclass
class ModuleOperator:
    """K = S^½ J Jᵀ S^½ of one module of a causal LM on token ids (N, T); ``dim`` = N·C."""

    model: nn.Module
    ids: Tensor
    module: str
    position: int = -1
    metric_sqrt: Tensor | None = None
    max_memory_gb: float | None = None

    def __post_init__(self):
        self._wrapped = FinalHidden(self.model, self.position, self.metric_sqrt)
        self._ntk = entk.NTK(
            self._wrapped,
            self.ids,
            groups={"module": [f"lm.{self.module}"]},
            outputs="flatten",
            max_memory_gb=self.max_memory_gb,
        )
        self.n_samples, self.n_outputs, self.dim = self._ntk.n_samples, self._ntk.n_outputs, self._ntk.dim

    def matvec(self) -> Callable[[Tensor], Tensor]:
        """V (dim, b) → K V."""
        return self._ntk.matvec("module")

    def eigenpairs(self, k: int = 25) -> tuple[Tensor, Tensor]:
        """Converged top-k eigenpairs: values descending (k,), vectors (N·C, k) class-major."""
        return self._ntk.eigenpairs(k, "module")


def module_operator(model: nn.Module, ids: Tensor, module: str, **kw) -> ModuleOperator:
    """The paper's per-module operator of a causal LM (see the module's docstring)."""
    return ModuleOperator(model, ids, module, **kw)


def lanczos(
    matvec: Callable[[Tensor], Tensor], dim: int, *, steps: int = 50, k: int = 25, seed: int = 0, dtype=torch.float32
) -> tuple[Tensor, Tensor]:
    """The author's solver: ``steps`` Lanczos steps from a random start, the three-term recurrence plus
    one full Gram–Schmidt pass per step, ``eigh`` of the tridiagonal; top-k Ritz pairs (k,), (dim, k)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=gen, dtype=dtype)
    q = q / q.norm()
    basis, alphas, betas = [q], [], []
    prev, beta = torch.zeros_like(q), torch.zeros((), dtype=dtype)
    for _ in range(steps):
        w = matvec(q[:, None])[:, 0].to(dtype)
        alpha = q @ w
        w = w - alpha * q - beta * prev
        stacked = torch.stack(basis, 1)
        w = w - stacked @ (stacked.T @ w)
        alphas.append(alpha)
        beta = w.norm()
        if beta <= 1e-10 * alpha.abs() or len(basis) == steps:
            break
        betas.append(beta)
        prev, q = q, w / beta
        basis.append(q)
    n = len(alphas)
    tri = torch.diag(torch.stack(alphas))
    if n > 1:
        off = torch.stack(betas[: n - 1])
        tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
    vals, vecs = torch.linalg.eigh(tri)
    top = torch.argsort(vals, descending=True)[:k]
    return vals[top], torch.stack(basis[:n], 1) @ vecs[:, top]
