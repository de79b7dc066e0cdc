"""The per-module operator K = S^½ J Jᵀ S^½ of a causal LM, on the network downstream of the module only.

J is the Jacobian of the final normed hidden state at one position (N contexts, C outputs) with
respect to one module's parameters θ (P numbers). For one chunk of contexts the map θ → h factors as

    θ ──module(cached input)──> y ──rest of its block, later blocks, final norm──> h[:, position] S^½

A forward pass per chunk (``_capture``) stores what that map needs: the module's input, the
arguments its block and every later block are called with, and the outputs of the parts of its
block that finished before it started (its siblings and their ancestors' earlier siblings, e.g. the
attention of the block of an MLP projection), which cannot depend on θ. ``_Site.run`` then
replays the map with those parts returning their cached outputs, so a product differentiates the
module itself and what lies after it. Where the module lies before the last block, h at the position
depends on the last block's other positions only through their attention keys and values: the
replay runs that block at the position alone against a key-value cache of the positions before it
(checked once against the whole block on two contexts, which is replayed where they differ). The
embedding is the first module: its map is the whole base model from ``inputs_embeds``, and its θ
the rows of the tokens that occur (the others have a zero Jacobian).

Products are ``torch.func`` jvp/vjp passes batched over a block of vectors with ``vmap``, split at y: the
module's own part (two matrix products on its cached input for an ``nn.Linear``) and the downstream part
y → h S^½. On the matrix-free route each chunk's downstream map is linearised once and kept where the
budget allows (its pullback, and the pullback's transpose for the jvp), so a product is one backward and
one tangent pass through the downstream network, without recomputing its primal. The parameter-side
Gram Jᵀ S J (P, P) is a sum over chunks; the kernel side K (N·C, N·C) a vjp over all chunks then a jvp,
or, for an ``nn.Linear`` whose N·T' input rows are no more than its input width, the downstream pullback,
the Gram of those rows and the downstream push (no weight-shaped intermediates).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from entk.core.lm_closed_forms import closed_form_calls
from entk.core.lm_inputs import checked_ids
from entk.core.memory import resolve_max_memory_gb, saved_bytes_per_sample
from entk.core.solvers import SolverInfo, default_block_size, default_tol, fix_signs, top_eigenpairs_matfree

Params = dict[str, Tensor]
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm")
# Vectors per batched pass on the matrix-free route: intermediates grow with it, and the solver's
# block (k + oversampling) splits into a few such passes. The jacobian route's products take up to C
# vectors a pass (its chunks are sized for that), each pass streaming D̃ once.
SUB_BLOCK = 16
# A pass keeps transients of up to about a dozen copies of the largest saved activation per vector it
# carries (the default LM's attention output projections, whose downstream holds the MLP's activations
# and their GELU derivatives; its MLP projections need fewer).
_PASS_COPIES = 12
# Shares of the budget: one batched pass over a chunk of contexts, and what is kept between products (the
# stored Jacobian D̃, or the matrix-free route's linearisations of the downstream network).
_PASS_SHARE = 0.25
_STORE_SHARE = 0.6
# Bytes of a kept linearisation per byte of the primal's saved tensors: its pullback's graph adds to them (RSS
# grew by 1.4× the saved tensors for Gemma-3-270M's widths' first MLP projection, less for later modules).
_KEPT_COPIES = 2
# Bytes of saved activations of the downstream network a D̃ pass reads: the graph of one group of contexts, over
# which the C passes run, is held instead of a whole chunk's (475 contexts of 0.8 MB for the default LM's block-0
# MLP projection, 24 MiB → 30). Four times as many contexts a group took as long; a quarter as many, twice as long
# (the per-operation overhead of passes over fewer contexts).
_GROUP_SAVED_BYTES = 24 * 2**20
# The same for the chain through the whole model (``downstream_jacobians``), whose passes take several modules'
# rows each: its groups of contexts went faster up to about this size (14 contexts of the default LM a group: 32 s
# for N = 1024 on one core; 57: 27 s; 114: 24 s; 228: 24 s), within a quarter of the budget.
_CHAIN_GROUP_SAVED_BYTES = 192 * 2**20
JACOBIAN_MAX_OUTPUTS = 256
ROUTES = ("jacobian", "matrix_free")


def base_model(model: nn.Module) -> nn.Module:
    """The decoder stack of a Hugging Face causal LM (``model.model``, ``model.transformer``, …)."""
    prefix = getattr(model, "base_model_prefix", None)
    inner = getattr(model, prefix, None) if prefix else None
    if not isinstance(inner, nn.Module):
        raise TypeError(
            f"{type(model).__name__} is not a Hugging Face causal LM with a base model "
            "(load it with AutoModelForCausalLM, e.g. entk.lm.load_causal_lm)"
        )
    return inner


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The base model's list of blocks (the ``nn.ModuleList`` with ``config.num_hidden_layers`` entries)."""
    base = base_model(model)
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for child in base.children():
        if isinstance(child, nn.ModuleList) and len(child) == n:
            return child
    raise TypeError(f"{type(model).__name__} has no list of {n} decoder blocks in its base model")


def final_norm(model: nn.Module) -> nn.Module:
    """The norm the base model applies after its last block."""
    base = base_model(model)
    for name in _FINAL_NORMS:
        norm = getattr(base, name, None)
        if isinstance(norm, nn.Module):
            return norm
    raise TypeError(f"{type(model).__name__}'s base model has no final norm named one of {_FINAL_NORMS}")


def check_eager(model: nn.Module) -> None:
    """Refuse attention other than eager: torch has no forward-mode AD through fused attention kernels."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl not in (None, "eager"):
        raise ValueError(
            f"the model runs attention with {impl!r}, and torch has no forward-mode AD (jvp) through fused "
            "scaled-dot-product attention kernels: load it with entk.lm.load_causal_lm (eager) or "
            "attn_implementation='eager'"
        )


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@contextlib.contextmanager
def _replaced_calls(calls: dict[nn.Module, Callable]) -> Iterator[None]:
    """Within the block, each module in ``calls`` runs that function instead of its forward (nested blocks restore
    the replacements of the enclosing one)."""
    before = {module: module.__dict__.get("forward") for module in calls}
    for module, fn in calls.items():
        module.forward = fn
    try:
        yield
    finally:
        for module, fn in before.items():
            if fn is None:
                del module.forward
            else:
                module.forward = fn


def _replaced(outputs: dict[nn.Module, object]) -> contextlib.AbstractContextManager:
    """Within the block, each module in ``outputs`` returns its value instead of computing it."""
    return _replaced_calls({module: (lambda *_, _v=value, **__: _v) for module, value in outputs.items()})


@dataclasses.dataclass
class _Chunk:
    """What one chunk of contexts needs to replay θ → h[:, position] S^½ downstream of the module."""

    module_args: tuple
    module_kwargs: dict
    calls: list[tuple[tuple, dict]]  # (args, kwargs) of the module's block and each later block
    cached: dict[nn.Module, object]  # outputs of the block's parts that finished before the module started
    output: Tensor  # the module's output y (n, T, ...)


@dataclasses.dataclass
class _Site:
    """Where the module sits: its block index (None: the embedding, before every block) and what runs after.

    With ``at_position`` the last block runs at the output's position alone when the module lies before it:
    h there depends on the last block's other positions only through their attention keys and values, so a
    first call on the earlier positions fills a key-value cache and a second runs the block at the position
    (the backward passes skip its queries, attention output, norms and MLP at every other position)."""

    model: nn.Module
    module: nn.Module
    block: int | None
    position: int
    metric_sqrt: Tensor | None
    at_position: bool = False

    def finish(self, h: Tensor) -> Tensor:
        """The final norm and S^½ on the hidden state at the position (n, d) → (n, C)."""
        h = final_norm(self.model)(h)
        return h if self.metric_sqrt is None else h @ self.metric_sqrt

    def run(self, chunk: _Chunk, y: Tensor) -> Tensor:
        """h[:, position] S^½ (n, C) of the chunk with the module's output replaced by y."""
        layers = decoder_layers(self.model)
        last = layers[-1]
        fast = self.at_position and self.block != len(layers) - 1
        if self.block is None:
            # The base model turns embeddings into the first block's input (GPT-2 adds positions); what it does
            # after its last block is discarded, which then hands its output at the position aside.
            kept = []

            def aside(*a, **k):
                kept.append(_at_position(last, a, k, self.position))
                return a[0] if a else k["hidden_states"]

            patch = {last: aside} if fast else {}
            with _replaced_calls(patch):
                out = base_model(self.model)(inputs_embeds=y, use_cache=False).last_hidden_state
            if fast:
                return self.finish(kept[0][:, 0])
            return out[:, self.position] if self.metric_sqrt is None else out[:, self.position] @ self.metric_sqrt
        args, kwargs = chunk.calls[0]
        with _replaced({**chunk.cached, self.module: y}):
            x = _first(layers[self.block](*args, **kwargs))
        later = list(zip(layers[self.block + 1 :], chunk.calls[1:], strict=True))
        for layer, call in later[:-1] if fast else later:
            args, kwargs = _on(x, *call)
            x = _first(layer(*args, **kwargs))
        if fast:
            return self.finish(_at_position(last, *_on(x, *chunk.calls[-1]), self.position)[:, 0])
        return self.finish(x[:, self.position])


def _on(x: Tensor, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A block's recorded call (args, kwargs) with its input hidden states replaced by x."""
    return ((x, *args[1:]), kwargs) if args else ((), {**kwargs, "hidden_states": x})


_CACHE_NAMES = ("cache", "past_key_values", "past_key_value")


def _cache_name(layer: nn.Module) -> str | None:
    """The name under which the block's forward takes a key-value cache (None: it takes none)."""
    parameters = inspect.signature(type(layer).forward).parameters
    return next((name for name in _CACHE_NAMES if name in parameters), None)


def _at_position(layer: nn.Module, args: tuple, kwargs: dict, p: int) -> Tensor:
    """A decoder block's output (n, 1, d) at position p alone, from its call (args, kwargs) on all positions:
    a first call on positions < p fills a key-value cache, a second runs position p against it."""
    from transformers import DynamicCache

    forward = type(layer).forward.__get__(layer)
    signature = inspect.signature(forward)
    named = signature.bind(*args, **kwargs).arguments
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            named = {**named.pop(name, {}), **named}
    x = named.pop("hidden_states")
    named[_cache_name(layer)] = DynamicCache()
    if p > 0:
        forward(x[:, :p], **_positions(named, slice(0, p), slice(0, p)))
    return _first(forward(x[:, p : p + 1], **_positions(named, slice(p, p + 1), slice(0, p + 1))))


def _positions(named: dict, rows: slice, keys: slice) -> dict:
    """A block's keyword arguments restricted to query positions ``rows`` attending to ``keys``."""
    out = dict(named)
    if isinstance(named.get("attention_mask"), Tensor):
        out["attention_mask"] = named["attention_mask"][..., rows, keys]
    if isinstance(named.get("position_ids"), Tensor):
        out["position_ids"] = named["position_ids"][..., rows]
    if isinstance(named.get("cache_position"), Tensor):
        out["cache_position"] = named["cache_position"][rows]
    if named.get("position_embeddings") is not None:
        out["position_embeddings"] = tuple(t[:, rows] for t in named["position_embeddings"])
    return out


def _ancestors(root: nn.Module, target: nn.Module) -> list[nn.Module]:
    """Modules from ``root`` down to ``target``'s parent."""
    for _, child in root.named_children():
        if child is target:
            return [root]
        if any(m is target for m in child.modules()):
            return [root, *_ancestors(child, target)]
    return []


def _capture(site: _Site, ids: Tensor) -> _Chunk:
    """One forward pass over a chunk of contexts, recording what ``_Site.run`` replays."""
    model, module = site.model, site.module
    layers = decoder_layers(model)
    record: dict = {"calls": [], "module": [], "done": {}, "counts": {}, "started": False}
    hooks = []
    if site.block is not None:
        for layer in layers[site.block :]:
            hooks.append(
                layer.register_forward_pre_hook(lambda _m, a, k: record["calls"].append((a, dict(k))), with_kwargs=True)
            )
        path = _ancestors(layers[site.block], module)
        earlier = [c for a in path for c in a.children() if c not in path and c is not module]
        for child in earlier:

            def done(m, _a, out):
                record["counts"][m] = record["counts"].get(m, 0) + 1
                if not record["started"]:
                    record["done"][m] = out

            hooks.append(child.register_forward_hook(done))

    def start(_m, args, kwargs):
        record["started"] = True
        record["module"].append((args, dict(kwargs)))

    hooks.append(module.register_forward_pre_hook(start, with_kwargs=True))
    hooks.append(module.register_forward_hook(lambda _m, _a, out: record.update(output=out)))
    try:
        with torch.no_grad():
            base_model(model)(input_ids=ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    if len(record["module"]) != 1:
        raise ValueError(
            f"the module is called {len(record['module'])} times in one forward pass; the operator needs a "
            "module called once per pass (choose one of entk.lm.module_roles(model))"
        )
    cached = {m: out for m, out in record["done"].items() if record["counts"][m] == 1}
    args, kwargs = record["module"][0]
    return _Chunk(args, kwargs, record["calls"], cached, record["output"])


def _last_block_alone_agrees(site: _Site, chunk: _Chunk | None, y: Tensor) -> bool:
    """Whether the last block run at the output's position alone gives h S^½ of a few contexts (module output y,
    their captured chunk) as the whole block does: the module lies before the last block, the block takes a
    key-value cache, and nothing else in it reads other positions. Where not, the whole last block is replayed."""
    layers = decoder_layers(site.model)
    if site.block == len(layers) - 1 or _cache_name(layers[-1]) is None:
        return False
    with torch.no_grad():
        whole = site.run(chunk, y)
        try:
            alone = dataclasses.replace(site, at_position=True).run(chunk, y)
        except torch.OutOfMemoryError:
            raise
        except (TypeError, ValueError, RuntimeError, IndexError, KeyError, AttributeError) as err:
            # A block whose cache or position arguments are not transformers' usual ones.
            warnings.warn(
                f"the last block of {type(site.model).__name__} cannot run at the output position alone "
                f"({type(err).__name__}: {err}); replaying it at every position (exact, slower)",
                stacklevel=4,
            )
            return False
    scale = float(whole.abs().max())
    agrees = alone.shape == whole.shape and torch.allclose(alone, whole, rtol=1e-4, atol=1e-5 * scale)
    if not agrees:
        warnings.warn(
            f"the last block of {type(site.model).__name__} at the output position alone differs from the whole "
            "block; replaying it at every position (exact, slower)",
            stacklevel=4,
        )
    return agrees


class _Embedding:
    """The embedding's rows of the tokens that occur, as parameters: y = scale · E[ids]."""

    def __init__(self, module: nn.Module, ids: Tensor):
        if not isinstance(module, nn.Embedding):
            raise TypeError(f"the input embedding is a {type(module).__name__}, not an nn.Embedding")
        self.rows, inverse = torch.unique(ids, return_inverse=True)
        self.inverse = inverse.reshape(ids.shape)
        self.scale = getattr(module, "embed_scale", 1.0)
        self.primals = {"weight": module.weight.detach()[self.rows]}
        with torch.no_grad():
            expected = module(ids[:1])
        if not torch.allclose(self(self.primals, slice(0, 1)), expected):
            raise TypeError(f"{type(module).__name__} is not a (scaled) table lookup; its operator is not supported")

    def __call__(self, p: Params, rows: slice) -> Tensor:
        return F.embedding(self.inverse[rows], p["weight"]) * self.scale


@dataclasses.dataclass(frozen=True)
class StoredJacobian:
    """One module's downstream Jacobian D̃ = ∂(h S^½)/∂y over all N contexts, computed ahead of its operator
    (``downstream_jacobians``): ``values`` (N, C, T', *out) at the positions ``keep`` (T',) of its output y."""

    values: Tensor
    keep: Tensor


def jacobian_fits(store_bytes: int, n_outputs: int, max_memory_gb: float | None) -> bool:
    """Whether a module's operator takes the jacobian route: its D̃ (``store_bytes``) fits 60 % of the budget and
    C ≤ ``JACOBIAN_MAX_OUTPUTS``."""
    budget = resolve_max_memory_gb(max_memory_gb) * 2**30
    return store_bytes <= _STORE_SHARE * budget and n_outputs <= JACOBIAN_MAX_OUTPUTS


def _checked_modules(model: nn.Module, modules: list[str]) -> dict[str, nn.Module]:
    """The model's modules by name, once each of ``modules`` is found in a decoder block or is the embedding."""
    named = dict(model.named_modules())
    for m in modules:
        if m not in named:
            raise ValueError(
                f"no module named {m!r} in {type(model).__name__}; choose one of entk.lm.module_roles(model)"
            )
        inside = any(_inside(layer, named[m]) for layer in decoder_layers(model))
        if not inside and named[m] is not model.get_input_embeddings():
            raise ValueError(
                f"{m!r} is neither inside a decoder block nor the input embedding; "
                "choose one of entk.lm.module_roles(model)"
            )
    return named


def _chain_site(
    model: nn.Module, ids: Tensor, modules: list[str], position: int, metric_sqrt: Tensor | None
) -> tuple[_Site, dict[str, tuple[Tensor, tuple[int, ...]]]]:
    """The whole base model from ``inputs_embeds``; per module, the positions kept of its output (T',) and that
    output's shape at one position (*out).

    The last block runs at the position alone where that agrees with the whole block and no module asked for lies
    in it before its keys and values (its call on the earlier positions then reaches h only through the cache);
    a module of that block keeps the output's position alone, every other module the positions up to it."""
    embedding = model.get_input_embeddings()
    site = _Site(model, embedding, None, position % ids.shape[1], metric_sqrt)
    named = _checked_modules(model, modules)
    y = embedding(ids[:2]).detach()
    with torch.no_grad():
        site.at_position = _last_block_alone_agrees(site, None, y)
    calls = {m: [] for m in modules if named[m] is not embedding}
    hooks = [named[m].register_forward_hook(lambda _m, _a, out, m=m: calls[m].append(out)) for m in calls]
    try:
        with torch.enable_grad():
            h = site.run(None, y.requires_grad_())
    finally:
        for hook in hooks:
            hook.remove()
    last = [m for m in calls if _inside(decoder_layers(model)[-1], named[m])]
    if site.at_position and last:
        earlier = [calls[m][0] for m in last if len(calls[m]) == 2]
        grads = torch.autograd.grad(h, earlier, torch.randn_like(h), allow_unused=True) if earlier else []
        site.at_position = all(len(calls[m]) == 1 + (site.position > 0) for m in last) and all(
            g is None or not g.any() for g in grads
        )
    p = site.position
    return site, {
        m: (
            torch.tensor([p]) if site.at_position and m in last else torch.arange(p + 1),
            tuple((calls[m][-1] if m in calls else y).shape[2:]),
        )
        for m in modules
    }


def downstream_layout(
    model: nn.Module, ids: Tensor, modules: list[str], position: int = -1
) -> dict[str, tuple[Tensor, tuple[int, ...]]]:
    """Per module, the positions (T',) ``downstream_jacobians`` keeps of its output and that output's shape at one
    position (*out): its D̃ is (N, C, T', *out)."""
    return _chain_site(model, checked_ids(model, ids), modules, position, None)[1]


def downstream_jacobians(
    model: nn.Module,
    ids: Tensor,
    modules: list[str],
    *,
    position: int = -1,
    metric_sqrt: Tensor | None = None,
    max_memory_gb: float | None = None,
) -> Iterator[tuple[slice, dict[str, Tensor]]]:
    """D̃ = ∂(h S^½)/∂y of several modules at once, group of contexts by group: yields (rows, {module: D̃ of those
    rows (n, C, T', *out)}), T' the positions of ``downstream_layout``; what ``ModuleOperator(jacobian=…)`` takes.

    Each group's graph runs from the embedding (or the first module's output, if the embedding is not asked for)
    through every block, the last at the position alone where that agrees; each of its C reverse passes gives every
    module's rows at once. The modules share their downstream network, which is differentiated once for all of them
    instead of once per module (a module's own operator differentiates what lies after it). Groups hold graphs of at
    most ``_CHAIN_GROUP_SAVED_BYTES`` and a quarter of the budget ``max_memory_gb``; norms and activations pass
    through their closed-form backwards."""
    ids = checked_ids(model, ids)
    check_eager(model)
    named = _checked_modules(model, modules)
    ref = next(model.parameters())
    s = None if metric_sqrt is None else metric_sqrt.to(ref)
    embedding = model.get_input_embeddings()
    inner = [m for m in modules if named[m] is not embedding]
    site, layout = _chain_site(model, ids, modules, position, s)
    keep = {m: kept for m, (kept, _) in layout.items()}

    def run(rows: slice, outputs: dict[str, list[Tensor]]) -> tuple[Tensor, Tensor]:
        def record(name: str):
            def hook(_m, _a, out):
                if not isinstance(out, Tensor):
                    raise TypeError(
                        f"{name} returns {type(out).__name__}, not a tensor; choose an nn.Linear-like module"
                    )
                leaf = out if out.requires_grad else out.detach().requires_grad_()
                outputs[name].append(leaf)
                return leaf

            return hook

        hooks = [named[m].register_forward_hook(record(m)) for m in inner]
        try:
            y = embedding(ids[rows]).detach().requires_grad_(len(inner) < len(modules))
            with torch.enable_grad(), _replaced_calls(closed_form_calls(model)):
                h = site.run(None, y)
        finally:
            for hook in hooks:
                hook.remove()
        return y, h

    total, _ = saved_bytes_per_sample(lambda n: run(slice(0, n), {m: [] for m in inner}))
    group = min(_CHAIN_GROUP_SAVED_BYTES, _PASS_SHARE * resolve_max_memory_gb(max_memory_gb) * 2**30)
    step = int(max(1, group // max(total, 1)))
    for start in range(0, ids.shape[0], step):
        rows = slice(start, min(start + step, ids.shape[0]))
        outputs = {m: [] for m in inner}
        y, h = run(rows, outputs)
        inputs = [y if named[m] is embedding else outputs[m][-1] for m in modules]
        parts = {m: None for m in modules}
        eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
        for k in range(h.shape[1]):
            grads = torch.autograd.grad(
                h, inputs, eye[k].expand_as(h), retain_graph=k < h.shape[1] - 1, allow_unused=True
            )
            for m, x, g in zip(modules, inputs, grads, strict=True):
                if parts[m] is None:
                    parts[m] = x.new_zeros(x.shape[0], h.shape[1], len(keep[m]), *x.shape[2:])
                if g is not None:
                    # The last call's output: a last-block module at the position alone runs on it alone.
                    parts[m][:, k] = g if g.shape[1] == len(keep[m]) else g[:, keep[m]]
        yield rows, parts


@dataclasses.dataclass
class ModuleOperator:
    """K = S^½ J Jᵀ S^½ of one module of a causal LM on token ids (N, T): ``dim`` = N·C, vectors class-major
    (row c·N + n); ``n_params`` = P, the module's parameters (for the embedding: the rows of tokens that occur).

    Two exact routes to its products (``route``):

    - "jacobian": the downstream Jacobian D̃ = ∂(h S^½)/∂y (N, C, T', out), T' the positions it reaches,
      is computed once by C reverse passes per group of contexts (one cotangent each, through closed-form
      backwards of norms and activations, ``entk.core.lm_closed_forms``) and stored; a product is then the
      module's own jvp/vjp on its cached input (two matrix products for an ``nn.Linear``, on the kept
      positions) and a contraction with D̃. Chosen where D̃ fits 60 % of the budget and
      C ≤ ``JACOBIAN_MAX_OUTPUTS`` (a converged top 25 takes some hundreds of products, each a vjp and
      a jvp pass on the other route).
    - "matrix_free": every product a pullback and a push through the downstream network. Each chunk's
      linearisation of it (its pullback and that pullback's transpose) is kept where
      ``_KEPT_COPIES`` × the primal's saved tensors fit 60 % of the budget, so no product recomputes the
      primal; otherwise a pass recomputes it once for its block of vectors. For an ``nn.Linear`` whose
      N·T' input rows are no more than its input width, K passes through the Gram of those rows.

    Modules before the last block replay that block at the output position alone, against a key-value
    cache of the positions before it (checked once against the whole block; a warning where it cannot be).

    ``max_memory_gb`` (``entk.core.memory``) sizes the chunks of contexts of one batched pass and the store;
    ``route`` forces one route. ``jacobian``: this module's D̃ computed ahead (``downstream_jacobians``, which
    differentiates the network shared by several modules once for all of them): the jacobian route without
    its set-up.
    """

    model: nn.Module
    ids: Tensor
    module: str
    position: int = -1
    metric_sqrt: Tensor | None = None
    max_memory_gb: float | None = None
    route: str | None = None
    jacobian: StoredJacobian | None = None

    def __post_init__(self):
        self.ids = checked_ids(self.model, self.ids)
        check_eager(self.model)
        target = _checked_modules(self.model, [self.module])[self.module]
        if self.route not in (None, *ROUTES):
            raise ValueError(f"route must be one of {ROUTES} (or None to choose), got {self.route!r}")
        if self.jacobian is not None and self.route == "matrix_free":
            raise ValueError("a stored jacobian is for the jacobian route; leave route unset or give no jacobian")
        n_tokens = self.ids.shape[1]
        if not -n_tokens <= self.position < n_tokens:
            raise ValueError(
                f"position {self.position} is outside contexts of {n_tokens} tokens; "
                f"choose one in [-{n_tokens}, {n_tokens})"
            )
        ref = next(self.model.parameters())
        s = None if self.metric_sqrt is None else self.metric_sqrt.to(ref)
        block = next((i for i, layer in enumerate(decoder_layers(self.model)) if _inside(layer, target)), None)
        self._site = _Site(self.model, target, block, self.position % n_tokens, s)
        self._embedding = _Embedding(target, self.ids) if block is None else None
        self._primals = (
            self._embedding.primals if block is None else {n: p.detach() for n, p in target.named_parameters()}
        )
        self.n_params = sum(p.numel() for p in self._primals.values())
        # nn.Linear's products on the jacobian route are two matrix products for a whole block of vectors
        # (vmap of its jvp/vjp over weight tangents copies the input once per vector).
        self._linear = block is not None and type(target).forward is nn.Linear.forward
        self.n_samples = self.ids.shape[0]
        self._site.at_position = self._last_block_alone()
        self._budget = resolve_max_memory_gb(self.max_memory_gb) * 2**30
        per_context, largest, y = self._probe()
        self._saved_per_context, self._y_one = per_context, y
        self.n_outputs = y.shape[-1] if s is None else s.shape[1]
        self.dim = self.n_samples * self.n_outputs
        store = self.n_samples * self.n_outputs * (self._site.position + 1) * y[0, 0].numel() * y.element_size()
        if self.jacobian is not None:
            self._check_stored(y)
            store = self.jacobian.values.numel() * self.jacobian.values.element_size()
            self.route = "jacobian"
        elif self.route is None:
            self.route = "jacobian" if jacobian_fits(store, self.n_outputs, self.max_memory_gb) else "matrix_free"
        # A pass holds the primal's saved tensors once and transients of some copies of the largest of them
        # per vector: SUB_BLOCK vectors on the matrix-free route; one cotangent at a time for D̃, which is
        # kept, and products of up to C vectors, each the size of a context's D̃, on the jacobian route.
        largest = max(largest, y.numel() * y.element_size())
        if self.route == "jacobian":
            self._width = self.n_outputs
            per_pass = per_context + _PASS_COPIES * largest + 2 * store // self.n_samples
        else:
            self._width = SUB_BLOCK
            per_pass = per_context + _PASS_COPIES * SUB_BLOCK * largest
        self._chunk = int(max(1, min(self.n_samples, _PASS_SHARE * self._budget // per_pass)))
        # A kept linearisation holds a primal pass's saved tensors and those of its pullback's own graph.
        kept = _KEPT_COPIES * per_context * self.n_samples
        self._keep = self.route == "matrix_free" and kept <= _STORE_SHARE * self._budget
        # What the operator holds for its lifetime, which the solver's basis must leave room for.
        self._held = store if self.route == "jacobian" else kept if self._keep else 0
        self._linearised = {}
        self._chunks = [
            self._prepare(slice(s, min(s + self._chunk, self.n_samples))) for s in range(0, self.n_samples, self._chunk)
        ]

    # --- setting up ---

    def _y(self, chunk: _Chunk | None, rows: slice, p: Params | None = None) -> Tensor:
        """The module's output on the chunk's cached input, with parameters p (default: its own)."""
        p = self._primals if p is None else p
        if self._embedding is not None:
            return self._embedding(p, rows)
        return functional_call(self._site.module, p, chunk.module_args, chunk.module_kwargs)

    def _check_stored(self, y: Tensor) -> None:
        """A stored D̃ of this module on these contexts: (N, C, T', *out) on kept positions up to the output's."""
        values, keep = self.jacobian.values, self.jacobian.keep
        want = (self.n_samples, self.n_outputs, len(keep), *y.shape[2:])
        if tuple(values.shape) != want:
            raise ValueError(
                f"the stored jacobian of {self.module} has shape {tuple(values.shape)}, need {want} (N, C, kept "
                "positions, output): compute it with downstream_jacobians on the same model, contexts and metric"
            )
        if keep.ndim != 1 or len(keep) == 0 or keep.min() < 0 or keep.max() > self._site.position:
            raise ValueError(
                f"the stored jacobian of {self.module} keeps positions {keep.tolist()}; they must be in "
                f"[0, {self._site.position}], the output's position and before"
            )
        if values.dtype != y.dtype or values.device != y.device:
            raise ValueError(
                f"the stored jacobian of {self.module} is {values.dtype} on {values.device}, the model "
                f"{y.dtype} on {y.device}: move it with .to()"
            )

    def _last_block_alone(self) -> bool:
        rows = slice(0, min(2, self.n_samples))
        chunk = _capture(self._site, self.ids[rows]) if self._embedding is None else None
        with torch.no_grad():
            y = self._y(chunk, rows)
        return _last_block_alone_agrees(self._site, chunk, y)

    def _probe(self) -> tuple[int, int, Tensor]:
        """Bytes autograd saves per context in one downstream pass (all, and the largest tensor); y of one context."""
        outputs = []

        def run(n: int) -> None:
            rows = slice(0, n)
            chunk = _capture(self._site, self.ids[rows]) if self._embedding is None else None
            y = self._y(chunk, rows).detach().requires_grad_()
            outputs.append(y)
            self._site.run(chunk, y)

        total, largest = saved_bytes_per_sample(run)
        return max(total, 1), largest, outputs[0].detach()

    def _chunk_of(self, rows: slice) -> _Chunk | None:
        return _capture(self._site, self.ids[rows]) if self._embedding is None else None

    def _prepare(self, rows: slice):
        chunk = self._chunk_of(rows)
        if self.route == "matrix_free":
            return rows, chunk
        if self.jacobian is None:
            jac, keep = self._jacobian(rows)
        else:
            jac, keep = self.jacobian.values[rows].flatten(2), self.jacobian.keep.to(self.ids.device)
        if self._linear:
            # A linear layer maps each position on its own: its input at the kept positions is all a product needs.
            return rows, chunk.module_args[0][:, keep].contiguous(), jac, keep
        # Only the module's input is needed from here on.
        light = None if chunk is None else _Chunk(chunk.module_args, chunk.module_kwargs, [], {}, chunk.output)
        return rows, light, jac, keep

    def _jacobian(self, rows: slice) -> tuple[Tensor, Tensor]:
        """D̃ (n, C, T'·out) of the contexts ``rows`` and the positions T' it keeps (those with a nonzero derivative).

        Its C reverse passes (one cotangent each) run over groups of contexts, captured anew, whose graphs save at
        most ``_GROUP_SAVED_BYTES``. Batched over the C cotangents (vmap) every element-wise transient is C times the
        activations, which took more time (memory-bound) and C times the memory; 4 or 8 cotangents a pass over
        fewer contexts took as long as one."""
        saved, y = self._saved_per_context, self._y_one
        t = self._site.position + 1
        jac = y.new_empty(rows.stop - rows.start, self.n_outputs, t, *y.shape[2:])
        step = max(1, _GROUP_SAVED_BYTES // saved)
        calls = closed_form_calls(self.model)
        for start in range(0, len(jac), step):
            part = slice(rows.start + start, min(rows.start + start + step, rows.stop))
            self._downstream_jacobian(part, jac[start : start + step], calls)
        keep = jac.flatten(3).ne(0).any(dim=(0, 1, 3)).nonzero().squeeze(1)
        if len(keep) < t:
            jac = jac[:, :, keep]
        return jac.flatten(2), keep

    def _downstream_jacobian(self, rows: slice, out: Tensor, calls: dict[nn.Module, Callable]) -> None:
        """∂(h S^½)/∂y of a few contexts at the positions up to the output's, into ``out`` (n, C, T', *out): C
        plain-autograd reverse passes over one graph (less overhead an operation than ``torch.func.vjp``), whose
        norms and activations record their closed-form backward through ``calls`` (``closed_form_calls``)."""
        chunk = self._chunk_of(rows)
        y = self._y(chunk, rows).detach().requires_grad_()
        with torch.enable_grad(), _replaced_calls(calls):
            h = self._site.run(chunk, y)
        eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
        c, t = h.shape[1], out.shape[2]
        for k in range(c):
            out[:, k] = torch.autograd.grad(h, y, eye[k].expand_as(h), retain_graph=k < c - 1)[0][:, :t]

    # --- the map θ → y → h S^½ of one chunk (matrix-free route) ---

    def _downstream(self, i: int) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """The downstream map y → h S^½ of chunk i linearised at the module's output: (push, pull), push dy
        (b, n, T, *out) → (b, n, C) and pull (b, n, C) → (b, n, T, *out), each batched over b vectors.

        Kept per chunk where the budget allows (``_keep``): its pullback holds one primal pass's saved tensors,
        and push is the transpose of that pullback (a vjp of the linear map c → pull(c)), so no product
        recomputes the primal. Otherwise each call is a jvp or vjp pass that recomputes it once per block."""
        if i in self._linearised:
            return self._linearised[i]
        rows, chunk = self._chunks[i][:2]
        y = self._y(chunk, rows).detach()

        def g(v: Tensor) -> Tensor:
            return self._site.run(chunk, v)

        if not self._keep:
            return (
                lambda dy: vmap(lambda d: jvp(g, (y,), (d,))[1])(dy),
                lambda cot: vmap(vjp(g, y)[1])(cot)[0],
            )
        h, pullback = vjp(g, y)
        _, transpose = vjp(lambda c: pullback(c)[0], torch.zeros_like(h))
        self._linearised[i] = (_batched(transpose), _batched(pullback))
        return self._linearised[i]

    def _module_jvp(self, i: int, tangents: Params) -> Tensor:
        """dy (b, n, T, *out): the module's output along parameter tangents {name: (b, *shape)}."""
        rows, chunk = self._chunks[i][:2]
        if self._linear:
            x = chunk.module_args[0]
            dy = _linear_jvp(x, tangents)  # (n, T·out, b)
            return dy.permute(2, 0, 1).reshape(-1, *x.shape[:2], dy.shape[1] // x.shape[1])
        return vmap(lambda t: jvp(lambda p: self._y(chunk, rows, p), (self._primals,), (t,))[1])(tangents)

    def _module_vjp(self, i: int, dy: Tensor) -> Params:
        """The module's parameter cotangents {name: (b, *shape)} from output cotangents dy (b, n, T, *out)."""
        rows, chunk = self._chunks[i][:2]
        if self._linear:
            x = chunk.module_args[0]
            flat = dy.reshape(dy.shape[0], *x.shape[:2], -1).permute(1, 2, 3, 0).reshape(x.shape[0], -1, dy.shape[0])
            return _linear_vjp(x, flat, "bias" in self._primals)
        _, pullback = vjp(lambda p: self._y(chunk, rows, p), self._primals)
        return vmap(pullback)(dy)[0]

    # --- products ---

    def _flat(self, t: Params) -> Tensor:
        return torch.cat([t[k].reshape(t[k].shape[0], -1) for k in self._primals], dim=1).T

    def _unflat(self, u: Tensor) -> Params:
        sizes = [p.numel() for p in self._primals.values()]
        parts = u.T.split(sizes, dim=1)
        return {k: part.reshape(-1, *p.shape) for (k, p), part in zip(self._primals.items(), parts, strict=True)}

    def _j_chunk(self, i: int, tangents: Params) -> Tensor:
        """J̃ of chunk i on parameter tangents {name: (b, *shape)} → (b, n, C)."""
        if self.route == "matrix_free":
            return self._downstream(i)[0](self._module_jvp(i, tangents))
        rows, chunk, jac, keep = self._chunks[i]
        if self._linear:
            # D̃ᵀ on the right, whose rows a batched product reads in order: D̃ (n, C, q) on the left reads one
            # vector's product (Lanczos) several times slower.
            return torch.bmm(_linear_jvp(chunk, tangents).transpose(1, 2), jac.transpose(1, 2)).transpose(0, 1)
        dy = vmap(lambda t: jvp(lambda p: self._y(chunk, rows, p), (self._primals,), (t,))[1])(tangents)
        return torch.einsum("ncq,bnq->bnc", jac, dy[:, :, keep].flatten(2))

    def _jt_chunk(self, i: int, cot: Tensor) -> Params:
        """J̃ᵀ of chunk i on cotangents (b, n, C) → {name: (b, *shape)}, summed over its contexts."""
        if self.route == "matrix_free":
            return self._module_vjp(i, self._downstream(i)[1](cot))
        rows, chunk, jac, keep = self._chunks[i]
        if self._linear:
            # D̃ on the right likewise: with D̃ᵀ on the left a single vector's product read it column-wise, ten times
            # slower.
            return _linear_vjp(
                chunk, torch.bmm(cot.transpose(0, 1).contiguous(), jac).transpose(1, 2), "bias" in self._primals
            )
        y, pullback = vjp(lambda p: self._y(chunk, rows, p), self._primals)
        dy = y.new_zeros(cot.shape[0], *y.shape)
        dy[:, :, keep] = torch.einsum("ncq,bnc->bnq", jac, cot).reshape(*dy.shape[:2], len(keep), *y.shape[2:])
        return vmap(pullback)(dy)[0]

    def _j(self, tangents: Params) -> Tensor:
        """J̃ on parameter tangents {name: (b, *shape)} → (b, N, C), J̃ = S^½ J."""
        return torch.cat([self._j_chunk(i, tangents) for i in range(len(self._chunks))], dim=1)

    def _jt(self, cot: Tensor) -> Params:
        """J̃ᵀ on cotangents (b, N, C) → {name: (b, *shape)}, summed over contexts."""
        return _sum(self._jt_chunk(i, cot[:, self._chunks[i][0]]) for i in range(len(self._chunks)))

    def _jtj(self, tangents: Params) -> Params:
        """J̃ᵀ J̃ on parameter tangents, chunk by chunk (contexts are independent)."""
        return _sum(self._jt_chunk(i, self._j_chunk(i, tangents)) for i in range(len(self._chunks)))

    def _blocks(self, fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        ref = next(iter(self._primals.values()))

        def apply(v: Tensor) -> Tensor:
            with torch.no_grad():
                return torch.cat([fn(b.to(ref)).detach() for b in v.split(self._width, dim=1)], dim=1).to(v)

        return apply

    def factor(self) -> Callable[[Tensor], Tensor]:
        """U (P, b) → J̃ U (N·C, b), class-major."""
        return self._blocks(lambda u: _class_major(self._j(self._unflat(u))))

    def factor_t(self) -> Callable[[Tensor], Tensor]:
        """V (N·C, b) → J̃ᵀ V (P, b)."""
        return self._blocks(lambda v: self._flat(self._jt(_sample_major(v, self.n_samples))))

    def matvec(self) -> Callable[[Tensor], Tensor]:
        """V (dim, b) → K V."""
        if self._inputs_gram is not None:
            return self._blocks(lambda v: _class_major(self._k_through_inputs(_sample_major(v, self.n_samples))))
        return self._blocks(lambda v: _class_major(self._j(self._jt(_sample_major(v, self.n_samples)))))

    @functools.cached_property
    def _inputs_gram(self) -> Tensor | None:
        """G = X Xᵀ (N·T', N·T') of an ``nn.Linear`` module's inputs X at the N·T' (context, position up to the
        output's) rows, plus 1 with a bias, on the matrix-free route; None where N·T' exceeds the input width.

        J̃ J̃ᵀ passes through the module as G ⊗ I (Σ_{n,t} dy_{n,t} x_{n,t}ᵀ applied to every x_{m,t'}), which for
        N·T' ≤ input width costs fewer flops than the weight-shaped (b, out, in) cotangents and holds less."""
        if self.route != "matrix_free" or not self._linear:
            return None
        x = torch.cat([chunk.module_args[0][:, : self._site.position + 1] for _, chunk in self._chunks])
        x = x.flatten(0, 1)
        if x.shape[0] > x.shape[1]:
            return None
        gram = x @ x.T
        return gram + 1 if "bias" in self._primals else gram

    def _k_through_inputs(self, cot: Tensor) -> Tensor:
        """K on cotangents (b, N, C) → (b, N, C) as push(G · pull(cot)), chunk by chunk through the downstream map."""
        t, width = self._site.position + 1, self.ids.shape[1]
        # Each chunk's pull cut to the positions up to the output's (a copy, so its full (b, n, T, out) is freed
        # before the next chunk's), so every intermediate is (b, N·T', out) ≤ b × the weight.
        dy = torch.cat(
            [self._downstream(i)[1](cot[:, c[0]])[:, :, :t].contiguous() for i, c in enumerate(self._chunks)], dim=1
        )
        b, n = dy.shape[:2]
        mixed = (self._inputs_gram @ dy.reshape(b, n * t, -1)).reshape(dy.shape)
        pushed = []
        for i, c in enumerate(self._chunks):
            part = mixed[:, c[0]]
            full = part.new_zeros(b, part.shape[1], width, *part.shape[3:])
            full[:, :, :t] = part
            pushed.append(self._downstream(i)[0](full))
        return torch.cat(pushed, dim=1)

    def gram_matvec(self) -> Callable[[Tensor], Tensor]:
        """U (P, b) → J̃ᵀ J̃ U: the parameter side, with K's nonzero spectrum."""
        return self._blocks(lambda u: self._flat(self._jtj(self._unflat(u))))

    def eigenpairs(
        self,
        k: int = 25,
        *,
        tol: float | None = None,
        max_iter: int = 200,
        seed: int = 0,
        start: Tensor | None = None,
        start_images: Tensor | None = None,
        return_info: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, SolverInfo]:
        """Converged top-k eigenpairs: values descending (k,), unit vectors (N·C, k) class-major [, ``SolverInfo``].

        The block solver (``entk.core.solvers.top_eigenpairs_matfree``) runs on the parameter side when P < N·C
        (eigenvectors mapped back as J̃ u / ‖J̃ u‖), else on K itself; tolerance as for K in either case.
        ``start`` (N·C, j): approximate eigenvectors of K (e.g. Lanczos Ritz vectors) to begin the solver's
        block with (mapped to the parameter side as J̃ᵀ v there); ``start_images``: K·start where they are known
        (a Lanczos run's basis and its products, ``entk.lm.lanczos_run``): the solver then runs on K, its basis
        begins with them and the products they took are not repeated. The answer is converged to ``tol`` either
        way."""
        ref = next(iter(self._primals.values()))
        tol = default_tol(ref.dtype, self.dim) if tol is None else tol
        on_params = self.n_params < self.dim and start_images is None
        size = self.n_params if on_params else self.dim
        matvec = self.gram_matvec() if on_params else self.matvec()
        if start is not None and on_params:
            start = self.factor_t()(start)
        vals, vecs, info = top_eigenpairs_matfree(
            matvec,
            size,
            k,
            tol=tol,
            max_iter=max_iter,
            seed=seed,
            dtype=ref.dtype,
            device=ref.device,
            max_basis=self._max_basis(size, k),
            start=start,
            start_images=start_images,
        )
        if on_params:
            vecs = self.factor()(vecs)
            vecs = fix_signs(vecs / vecs.norm(dim=0).clamp_min(torch.finfo(vecs.dtype).tiny))
            info = dataclasses.replace(info, side="parameter")
        return (vals, vecs, info) if return_info else (vals, vecs)

    def _max_basis(self, size: int, k: int) -> int:
        """Largest basis m in [2b, 4b] whose vectors and images take at most half the budget, and no more than
        what the stored Jacobian or kept linearisations and a pass leave of it."""
        b = default_block_size(k, size)
        itemsize = next(iter(self._primals.values())).element_size()
        free = min(self._budget / 2, self._budget * (1 - _PASS_SHARE) - self._held)
        fits = int(max(free, 0) // (2 * itemsize * size))
        return min(size, max(2 * b, min(4 * b, fits)))


def _linear_jvp(x: Tensor, tangents: Params) -> Tensor:
    """dy (n, T'·out, b) of nn.Linear on its input x (n, T', in), tangents {weight: (b, out, in)[, bias: (b, out)]}."""
    w = tangents["weight"]
    b, out, width = w.shape
    n, t = x.shape[:2]
    dy = (x.reshape(-1, width) @ w.reshape(b * out, width).T).reshape(n, t, b, out)
    if "bias" in tangents:
        dy = dy + tangents["bias"]
    return dy.permute(0, 1, 3, 2).reshape(n, t * out, b)


def _linear_vjp(x: Tensor, dy: Tensor, bias: bool) -> Params:
    """nn.Linear's parameter cotangents from output cotangents dy (n, T'·out, b) on input x (n, T', in), summed over
    contexts and positions → {weight: (b, out, in)[, bias: (b, out)]}."""
    n, t, width = x.shape
    b = dy.shape[-1]
    flat = dy.reshape(n * t, -1)  # columns (out, b)
    grads = {"weight": (flat.T @ x.reshape(n * t, width)).reshape(-1, b, width).transpose(0, 1)}
    if bias:
        grads["bias"] = flat.sum(0).reshape(-1, b).T
    return grads


def _batched(fn: Callable[[Tensor], tuple[Tensor]]) -> Callable[[Tensor], Tensor]:
    """fn of one vector applied to a batch (b, ...): a single vector without ``vmap``, whose batching of every
    small operation cost a Lanczos step (one vector a product) several times the operations themselves."""
    return lambda x: fn(x[0])[0][None] if x.shape[0] == 1 else vmap(fn)(x)[0]


def _sum(parts) -> Params:
    total = None
    for part in parts:
        total = part if total is None else {k: total[k] + part[k] for k in part}
    return total


def _inside(root: nn.Module, target: nn.Module) -> bool:
    return any(m is target for m in root.modules())


def _class_major(y: Tensor) -> Tensor:
    """(b, N, C) → (C·N, b), row c·N + n."""
    return y.transpose(1, 2).reshape(y.shape[0], -1).T


def _sample_major(v: Tensor, n: int) -> Tensor:
    """(C·N, b) class-major → (b, N, C)."""
    return v.T.reshape(v.shape[1], -1, n).transpose(1, 2)
