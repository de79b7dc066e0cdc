"""Language models (docs/spec.md §4): the per-module eNTK of a causal LM's final hidden state.

The paper's operator (v4 §4) for one module of a causal language model is

    K = S^½ J Jᵀ S^½,   J = ∂ h_final[:, position] / ∂ θ_module   (N·C rows, class-major c·N + n)

with h_final the last hidden state after the final norm (C = d_model), and S = UᵀU (C, C) from the
unembedding U (V, C), so that K's nonzero spectrum is that of the flattened eNTK of the logits.
``module_operator`` binds a model, token ids (N, T) and one module; its ``eigenpairs`` and
``matvec`` are what the workflow's language-model views and the benchmarks call. ``lanczos`` is the
author's solver (50 steps, full reorthogonalisation), kept for comparison with the converged one.

How the operator is cheap (``entk.core.lm_operator``): only the network downstream of the module is
differentiated. One forward pass per chunk of contexts caches what the module's block receives
(its input, the keyword arguments every later block is called with, and the outputs of the block's
parts that ran before the module); a product then reruns the module on its cached input, the rest
of its block and the later blocks, never the embedding or the earlier blocks (and the last block at
the output position alone, against its keys and values). Contexts are independent, so K's
parameter-side Gram Jᵀ S J is a sum over chunks of contexts, each a pass for a whole block of vectors
(``torch.func.vmap``; on the matrix-free route through each chunk's kept linearisation of the
downstream network); the solver (``entk.core.solvers``' block method) runs on whichever side,
parameters or N·C, is smaller. Where the downstream Jacobian D̃ fits the budget, a product is two
contractions with it; ``downstream_jacobians`` computes D̃ of several modules at once, in one chain of
reverse passes through the network they share, for operators that take it (``jacobian=``).
``lanczos_run`` keeps the Lanczos basis and its products, from which the converged solver continues
(``ModuleOperator.eigenpairs(start=…, start_images=…)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from entk.core.lm_inputs import (
    check_model_dir,
    checked_ids,
    contexts_from_text,
    load_labels,
    load_token_ids,
    load_tokenizer,
)
from entk.core.lm_operator import (
    ModuleOperator,
    StoredJacobian,
    base_model,
    decoder_layers,
    downstream_jacobians,
    downstream_layout,
    jacobian_fits,
)

__all__ = [
    "FinalHidden",
    "check_model_dir",
    "checked_ids",
    "contexts_from_text",
    "load_labels",
    "load_token_ids",
    "load_tokenizer",
    "module_for",
    "ModuleOperator",
    "StoredJacobian",
    "base_model",
    "decoder_layers",
    "downstream_jacobians",
    "downstream_layout",
    "jacobian_fits",
    "lanczos",
    "lanczos_run",
    "LanczosRun",
    "load_causal_lm",
    "metric_sqrt",
    "module_operator",
    "module_roles",
    "unembedding",
]


def load_causal_lm(source, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A causal LM from a local Hugging Face directory (``config.json`` + weights, ``local_files_only``)
    or from a config (a ``PretrainedConfig``: random weights), with eager attention, in eval mode."""
    from transformers import AutoModelForCausalLM

    if isinstance(source, str | Path):
        model = AutoModelForCausalLM.from_pretrained(
            check_model_dir(source), local_files_only=True, attn_implementation="eager", dtype=dtype
        )
    else:
        source._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(source, dtype=dtype)
    return model.eval()


def _call_order(model: nn.Module, block: nn.Module) -> list[str]:
    """Names (within ``block``) of the modules with parameters of their own, in the order their calls end."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda *_, n=n: order.append(n))
        for n, m in block.named_modules()
        if n and any(True for _ in m.parameters(recurse=False))
    ]
    try:
        with torch.no_grad():
            base_model(model)(input_ids=torch.zeros(1, 2, dtype=torch.long, device=_device(model)), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return order


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


_ATTENTION = ("attn", "attention")
_MLP = ("mlp", "feed_forward", "ffn")


def _last_called(order: list[str], parts: tuple[str, ...]) -> str | None:
    """The last-called module under a child of the block whose name contains one of ``parts``."""
    found = [n for n in order if any(p in n.split(".")[0].lower() for p in parts) and "norm" not in n.split(".")[-1]]
    return found[-1] if found else None


def module_roles(model: nn.Module) -> dict[str, list[str]]:
    """Module names by role, one per block in order: {"mlp_out": [...], "attn_out": [...], "embedding": [name]}.

    The output projection of a block's MLP (attention) is the last module with weights called inside its
    MLP (attention) child — ``mlp.down_proj``, ``mlp.c_proj``, ``mlp.dense_4h_to_h`` (``self_attn.o_proj``,
    ``attn.c_proj``, ``attention.dense``) whatever the architecture names them.
    """
    names = {m: n for n, m in model.named_modules()}
    roles: dict[str, list[str]] = {"mlp_out": [], "attn_out": []}
    for layer in decoder_layers(model):
        order = _call_order(model, layer)
        for role, parts in (("mlp_out", _MLP), ("attn_out", _ATTENTION)):
            last = _last_called(order, parts)
            if last is not None:
                roles[role].append(f"{names[layer]}.{last}")
    roles["embedding"] = [names[model.get_input_embeddings()]]
    return roles


def module_for(model: nn.Module, role: str, block: int = 0) -> str:
    """The name of block ``block``'s module of ``role`` ("mlp_out", "attn_out"; "embedding" with block 0)."""
    roles = module_roles(model)
    if role not in roles or not roles[role]:
        have = sorted(r for r, names in roles.items() if names)
        raise ValueError(f"{type(model).__name__} has no module of role {role!r}; its roles are {have}")
    names = roles[role]
    if not -len(names) <= block < len(names):
        raise ValueError(f"block {block} is out of range: {type(model).__name__} has {len(names)} of role {role!r}")
    return names[block]


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
    """ids (N, T) → the final normed hidden state at ``position`` (N, C), times S^½ when given.

    The whole model in one function: the brute-force reference (``torch.func`` Jacobians) and the
    author's method differentiate this."""

    def __init__(self, lm: nn.Module, position: int = -1, metric_sqrt: Tensor | None = None):
        super().__init__()
        self.lm, self.position = lm, position
        self.register_buffer("metric_sqrt", metric_sqrt)

    def forward(self, ids: Tensor) -> Tensor:
        h = base_model(self.lm)(input_ids=ids, use_cache=False).last_hidden_state[:, self.position]
        return h if self.metric_sqrt is None else h @ self.metric_sqrt


def module_operator(
    model: nn.Module,
    ids: Tensor,
    module: str,
    position: int = -1,
    metric_sqrt: Tensor | None = None,
    max_memory_gb: float | None = None,
    jacobian: StoredJacobian | None = None,
) -> ModuleOperator:
    """The paper's per-module operator of a causal LM on token ids (N, T) (see the module's docstring); ``jacobian``
    its downstream Jacobian computed ahead (``downstream_jacobians``)."""
    return ModuleOperator(
        model, ids, module, position=position, metric_sqrt=metric_sqrt, max_memory_gb=max_memory_gb, jacobian=jacobian
    )


@dataclasses.dataclass(frozen=True)
class LanczosRun:
    """The author's Lanczos: top-k Ritz values (k,) and vectors (dim, k), and the orthonormal basis it built
    (dim, m) with the products K·basis (dim, m) it took, which a converged solver can start from
    (``ModuleOperator.eigenpairs(start=basis, start_images=images)``)."""

    values: Tensor
    vectors: Tensor
    basis: Tensor
    images: Tensor


def lanczos_run(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    *,
    steps: int = 50,
    k: int = 25,
    seed: int = 0,
    dtype=torch.float32,
    device=None,
) -> LanczosRun:
    """The author's solver: ``steps`` Lanczos steps from a random start, the three-term recurrence plus
    one full Gram–Schmidt pass per step, ``eigh`` of the tridiagonal; top-k Ritz pairs, the basis and its
    products. The start is drawn on the CPU whatever ``device`` the products run on, so a seed starts alike
    on both."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=gen, dtype=dtype).to(device)
    q = q / q.norm()
    basis, images, alphas, betas = [q], [], [], []
    prev, beta = torch.zeros_like(q), torch.zeros((), dtype=dtype)
    for _ in range(steps):
        w = matvec(q[:, None])[:, 0].to(dtype)
        images.append(w)
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
    stacked = torch.stack(basis[:n], 1)
    return LanczosRun(vals[top], stacked @ vecs[:, top], stacked, torch.stack(images, 1))


def lanczos(matvec: Callable[[Tensor], Tensor], dim: int, **settings) -> tuple[Tensor, Tensor]:
    """``lanczos_run``'s top-k Ritz pairs (k,), (dim, k); ``settings`` are its keywords (steps, k, seed, dtype,
    device)."""
    run = lanczos_run(matvec, dim, **settings)
    return run.values, run.vectors
