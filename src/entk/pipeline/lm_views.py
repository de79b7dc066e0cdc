"""The language-model views' jobs (docs/spec.md §4): probe contexts, per-module eNTK eigenpairs by
two solvers, and the hidden states of the PCA baseline, for any Hugging Face causal LM directory.

Calls only the public API of ``entk.lm`` (``load_causal_lm``, ``module_roles``, ``unembedding``,
``metric_sqrt``, ``module_operator``, ``lanczos``, ``downstream_jacobians``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from entk import lm
from entk import shared as wf

JACOBIAN_INDEX = "index.npz"


def resolve_module(model: nn.Module, spec: str) -> str:
    """A module name from ``role.index`` (``mlp_out.1``: block 1's MLP down-projection) or a name."""
    roles = lm.module_roles(model)
    role, _, index = spec.rpartition(".")
    if role in roles and index.isdigit():
        names = roles[role]
        if int(index) >= len(names):
            raise ValueError(f"module {spec}: the model has {len(names)} module(s) of role {role}")
        return names[int(index)]
    if spec not in dict(model.named_modules()):
        raise ValueError(f"module {spec!r} matches no module of the model; use a role ({sorted(roles)}) or a name")
    return spec


def output_metric(model: nn.Module, spec: str) -> Tensor:
    """S (C, C): UᵀU from the unembedding, or a positive semi-definite matrix from a .npy file."""
    if spec == "unembedding":
        u = lm.unembedding(model).double()
        return u.T @ u
    s = torch.from_numpy(np.load(spec, allow_pickle=False)).double()
    c = model.get_input_embeddings().weight.shape[1]
    if s.shape != (c, c):
        raise ValueError(f"output_metric {spec}: shape {tuple(s.shape)}, need ({c}, {c}) for d_model = {c}")
    check_psd(s, spec)
    return s


def check_psd(s: Tensor, where: str) -> None:
    """A symmetric positive semi-definite matrix, up to round-off; the error says what is wrong."""
    scale = s.abs().max().item() or 1.0
    if not torch.allclose(s, s.T, atol=1e-8 * scale):
        raise ValueError(f"output_metric {where}: the matrix is not symmetric; give S = Sᵀ (e.g. (S + Sᵀ)/2)")
    low = torch.linalg.eigvalsh(s).min().item()
    if low < -1e-8 * scale * s.shape[0]:
        raise ValueError(f"output_metric {where}: eigenvalue {low:.3g} < 0, not positive semi-definite; give S = AᵀA")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def subspace_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """‖Aᵀ B‖_F² / k of two orthonormal bases (D, k): 1 when they span the same subspace."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    return float(np.linalg.norm(qa.T @ qb) ** 2 / min(a.shape[1], b.shape[1]))


def store_jacobians(
    model: nn.Module,
    ids: Tensor,
    specs: list[str],
    metric: Tensor,
    directory: str | Path,
    *,
    position: int,
    max_memory_gb: float | None,
    log: Callable[[str], None] = print,
) -> list[str]:
    """The downstream Jacobians D̃ (N, C, T', *out) of the modules (roles like ``mlp_out.1`` or names) whose
    operators take the jacobian route at ``max_memory_gb``, from one chain of reverse passes shared by all of
    them (``lm.downstream_jacobians``): ``{spec}.npy`` each, streamed group of contexts by group, then
    ``index.npz`` with their kept positions. Returns the specs stored; the others' operators run matrix-free."""
    dtype = next(model.parameters()).dtype
    root = lm.metric_sqrt(metric).to(dtype)
    names = {spec: resolve_module(model, spec) for spec in specs}
    layout = lm.downstream_layout(model, ids, list(names.values()), position)
    n, c = ids.shape[0], root.shape[1]
    shapes = {spec: (n, c, len(layout[name][0]), *layout[name][1]) for spec, name in names.items()}
    itemsize = root.element_size()
    stored = [spec for spec in specs if lm.jacobian_fits(math.prod(shapes[spec]) * itemsize, c, max_memory_gb)]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if stored:
        with contextlib.ExitStack() as stack:
            files = {
                spec: stack.enter_context(
                    wf.npy_writer(directory / f"{spec}.npy", shapes[spec], str(dtype).removeprefix("torch."))
                )
                for spec in stored
            }
            chain = lm.downstream_jacobians(
                model, ids, [names[s] for s in stored], position=position, metric_sqrt=root, max_memory_gb=max_memory_gb
            )
            done = 0
            for rows, parts in chain:
                for spec in stored:
                    files[spec].write(parts[names[spec]].contiguous().cpu().numpy().data)
                done = rows.stop
                if done == n or done * 4 // n > (rows.start * 4) // n:
                    log(f"downstream jacobians: {done}/{n} contexts in {time.perf_counter() - start:.1f} s")
    wf.save_npz(directory / JACOBIAN_INDEX, **{spec: layout[names[spec]][0].numpy() for spec in stored})
    skipped = sorted(set(specs) - set(stored))
    log(
        f"stored D̃ of {len(stored)} module(s) {stored} in {time.perf_counter() - start:.1f} s"
        + (f"; {skipped} run matrix-free (D̃ exceeds the memory budget or C > 256)" if skipped else "")
    )
    return stored


def load_jacobian(directory: str | Path, spec: str, like: Tensor) -> lm.StoredJacobian | None:
    """The stored D̃ of one module (``store_jacobians``) as ``like``'s dtype and device; None where it was not stored."""
    directory = Path(directory)
    with np.load(directory / JACOBIAN_INDEX) as index:
        if spec not in index.files:
            return None
        keep = torch.from_numpy(index[spec])
    values = torch.from_numpy(np.load(directory / f"{spec}.npy", allow_pickle=False))
    return lm.StoredJacobian(values.to(like), keep)


def module_eigen(
    model: nn.Module,
    ids: Tensor,
    module: str,
    metric: Tensor,
    *,
    position: int,
    top_k: int,
    lanczos_steps: int,
    max_memory_gb: float | None,
    jacobian: lm.StoredJacobian | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, np.ndarray]:
    """Top-k eigenpairs of one module's K = S^½ J Jᵀ S^½ on ids (N, T) by the author's Lanczos and by the
    converged solver, their subspace overlap, times (s) and peak memory (MB); ``jacobian``: its D̃ stored ahead
    (``store_jacobians``), which the operator then does not compute.

    The author's Lanczos runs first, from its own random start, and its basis with the products it took begins
    the converged solver's (with 8 random guard vectors): that solver still iterates to its tolerance, in a
    fraction of the products of a random start. ``seconds`` is the operator's set-up plus the converged solver,
    ``lanczos_seconds`` the Lanczos."""
    dtype = next(model.parameters()).dtype
    root = lm.metric_sqrt(metric).to(dtype)
    name = resolve_module(model, module)
    before = peak_rss_mb()
    start = time.perf_counter()
    op = lm.module_operator(
        model, ids, name, position=position, metric_sqrt=root, max_memory_gb=max_memory_gb, jacobian=jacobian
    )
    k = min(top_k, op.dim)
    setup = time.perf_counter() - start
    log(f"{name}: operator set up in {setup:.1f} s ({op.route} route{', D̃ stored ahead' if jacobian else ''})")
    start = time.perf_counter()
    run = lm.lanczos_run(op.matvec(), op.dim, steps=lanczos_steps, k=k, seed=0, dtype=dtype, device=ids.device)
    l_values, l_vectors = run.values, run.vectors
    l_seconds = time.perf_counter() - start
    log(f"{name}: {lanczos_steps}-step Lanczos in {l_seconds:.1f} s")
    start = time.perf_counter()
    values, vectors = op.eigenpairs(k, start=run.basis, start_images=run.images)
    seconds = setup + time.perf_counter() - start
    log(f"{name}: converged top {k} in {seconds - setup:.1f} s, λ1 {values[0]:.4g}, λ{k} {values[-1]:.4g}")
    values, vectors, l_values, l_vectors = (t.cpu() for t in (values, vectors, l_values, l_vectors))
    overlap = subspace_overlap(vectors.double().numpy(), l_vectors.double().numpy())
    log(f"{name}: top-{k} overlap of the Lanczos and converged subspaces {overlap:.4f}")
    return {
        "module": np.asarray(name),
        "n_samples": np.asarray(op.n_samples),
        "n_outputs": np.asarray(op.n_outputs),
        "values": values.double().numpy(),
        "vectors": vectors.float().numpy(),
        "lanczos_values": l_values.double().numpy(),
        "lanczos_vectors": l_vectors.float().numpy(),
        "overlap": np.asarray(overlap),
        "seconds": np.asarray(seconds),
        "lanczos_seconds": np.asarray(l_seconds),
        "peak_rss_mb": np.asarray(peak_rss_mb()),
        "rss_growth_mb": np.asarray(peak_rss_mb() - before),
    }


@torch.no_grad()
def last_hidden_states(model: nn.Module, ids: Tensor, position: int = -1, batch: int = 256) -> np.ndarray:
    """Every block's output at ``position`` (L + 1, N, C): the embedding, then each block's residual
    stream (``hidden_states`` of the library: the last one after the final norm)."""
    parts = [
        torch.stack(model(input_ids=b, output_hidden_states=True).hidden_states)[:, :, position]
        for b in ids.split(batch)
    ]
    return torch.cat(parts, 1).double().cpu().numpy()


def word_ids(tokenizer, words: set[str]) -> dict[str, int]:
    """{word: its one token id}; a tokenizer that splits a word is refused (the contexts count words)."""
    ids = {}
    for w in sorted(words):
        tokens = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(
                f"the tokenizer gives {len(tokens)} tokens for the word {w!r}: the context builder needs a "
                "word-level tokenizer (one token per word)"
            )
        ids[w] = tokens[0]
    return ids


@torch.no_grad()
def greedy_next(model: nn.Module, ids: Tensor, batch: int = 512) -> Tensor:
    """The greedy next token after each context (N, T) → (N,)."""
    return torch.cat([model(input_ids=b).logits[:, -1].argmax(-1) for b in ids.split(batch)])


def build_contexts(
    model: nn.Module,
    tokenizer,
    corpus: list[tuple[list[str], list[str]]],
    classes: list[str],
    per_class: int,
    length: int,
    seed: int,
    chunk_size: int = 256,
) -> dict[str, np.ndarray]:
    """The author's probe contexts from tagged stories [(words, tags)] (docs/spec.md §4).

    Stories in ``random.Random(seed)`` order; per story one target drawn uniformly among its words of
    a target class with at least ``length`` words before it; the context is those ``length`` words.
    A context is kept while its class has room if the model's greedy next word has the target's class
    (read from the corpus's tags). Returns ids (N, T), labels (N,) class indices, the story and word
    index of each target, the target and greedy words."""
    tag_of = {w: t for words, tags in corpus for w, t in zip(words, tags, strict=True)}
    to_id = word_ids(tokenizer, set(tag_of))
    vocab = {i: w for w, i in tokenizer.get_vocab().items()}
    rng = random.Random(seed)
    order = list(range(len(corpus)))
    rng.shuffle(order)
    candidates = []
    for s in order:
        words, tags = corpus[s]
        eligible = [i for i, t in enumerate(tags) if t in classes and i >= length]
        if eligible:
            i = rng.choice(eligible)
            candidates.append((s, i, [to_id[w] for w in words[i - length : i]]))
    if not candidates:
        raise ValueError(
            f"no story has a word of the classes {classes} with {length} words before it: the contexts would "
            "be shorter than asked; lower context_length or give longer stories"
        )
    counts = dict.fromkeys(classes, 0)
    kept = []
    pending = iter(candidates)
    # In chunks of candidates whose class still has room: the same contexts as one at a time.
    while batch := list(itertools.islice(pending, chunk_size)):
        chunk = [c for c in batch if counts[corpus[c[0]][1][c[1]]] < per_class]
        if not chunk:
            continue
        greedy = greedy_next(model, torch.tensor([c[2] for c in chunk]))
        for (s, i, ids), g in zip(chunk, greedy.tolist(), strict=True):
            target = corpus[s][1][i]
            if counts[target] < per_class and tag_of.get(vocab[g]) == target:
                counts[target] += 1
                kept.append((s, i, ids, classes.index(target), corpus[s][0][i], vocab[g]))
        if all(n == per_class for n in counts.values()):
            break
    short = {c: n for c, n in counts.items() if n < per_class}
    if short:
        raise ValueError(
            f"too few contexts whose greedy next word has the target's class: {short} of {per_class} asked from "
            f"{len(corpus)} stories; give more stories (probe_stories) or lower per_class"
        )
    kept.sort(key=lambda k: k[3])
    return {
        "ids": np.asarray([k[2] for k in kept], dtype=np.int64),
        "labels": np.asarray([k[3] for k in kept], dtype=np.int64),
        "classes": np.asarray(classes),
        "story": np.asarray([k[0] for k in kept], dtype=np.int64),
        "word": np.asarray([k[1] for k in kept], dtype=np.int64),
        "target": np.asarray([k[4] for k in kept]),
        "greedy": np.asarray([k[5] for k in kept]),
        "candidates": np.asarray(len(candidates)),
    }
