"""Benchmark (not a test): per module of the default LM (docs/spec.md §4), the converged top 25 of
K = S^½ J Jᵀ S^½ and the author's 50-step Lanczos on entk's products, at the issue's size, as the
workflow runs them.

The model is the `stories` experiment's Gemma-3 (d_model 64, 3 layers, 4 heads, MLP 256, T = 32) with
random weights from a fixed seed (the cost does not depend on training; the solver's iteration count
does a little), N random contexts. As in the workflow, a first child process stores every module's
downstream Jacobian D̃ from one chain of reverse passes (``lm_views.store_jacobians``, rule
lm_jacobians); then each module runs in a child process of its own (rule lm_eigen): the operator's
set-up from its stored D̃, the author's 50-step Lanczos, and the converged solver from the Lanczos basis
and the products it took. ``--own`` gives each operator its own D̃ instead (no chain). Torch threads as a workflow job (1
unless told). Wall and CPU seconds of each phase; peak RSS (VmHWM) above what the process held before
(the imported libraries and the model). "top 25" is the set-up plus the converged solver.

    PYTHONPATH=src .venv/bin/python benchmarks/lm_modules_bench.py --contexts 1024 --threads 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import tempfile
import time

import torch

from entk import lm
from entk.kinds import story_lm
from entk.pipeline import lm_views

SETTINGS = {"d_model": 64, "n_layers": 3, "n_heads": 4, "d_mlp": 256, "context_length": 32}
MODULES = ["mlp_out.2", "attn_out.2", "mlp_out.1", "attn_out.1", "mlp_out.0", "attn_out.0", "embedding.0"]


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _setting(contexts: int, threads: int):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = story_lm.build(SETTINGS).eval()
    ids = torch.randint(3, model.config.vocab_size, (contexts, SETTINGS["context_length"]))
    return model, ids, lm_views.output_metric(model, "unembedding")


def chain(specs: list[str], contexts: int, threads: int, max_memory_gb: float, directory: str, conn) -> None:
    model, ids, metric = _setting(contexts, threads)
    base = _status_mib("VmRSS")
    start = (time.perf_counter(), time.process_time())
    stored = lm_views.store_jacobians(
        model, ids, specs, metric, directory, position=-1, max_memory_gb=max_memory_gb, log=lambda m: None
    )
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    conn.send((stored, wall, cpu, _status_mib("VmHWM") - base, os.getloadavg()[0]))
    conn.close()


def run(spec: str, contexts: int, threads: int, max_memory_gb: float, save, jacobians, conn) -> None:
    model, ids, metric = _setting(contexts, threads)
    root = lm.metric_sqrt(metric).float()
    name = lm_views.resolve_module(model, spec)
    base = _status_mib("VmRSS")
    marks = [(time.perf_counter(), time.process_time())]
    jacobian = lm_views.load_jacobian(jacobians, spec, like=root) if jacobians else None
    op = lm.module_operator(model, ids, name, metric_sqrt=root, max_memory_gb=max_memory_gb, jacobian=jacobian)
    marks.append((time.perf_counter(), time.process_time()))
    run = lm.lanczos_run(op.matvec(), op.dim, steps=50, k=25)
    marks.append((time.perf_counter(), time.process_time()))
    vals, vecs, info = op.eigenpairs(25, start=run.basis, start_images=run.images, return_info=True)
    marks.append((time.perf_counter(), time.process_time()))
    if save:
        # To compare two versions of the operator: their top 25 should agree to round-off.
        torch.save({"values": vals, "vectors": vecs}, os.path.join(save, f"{spec}.pt"))
    phases = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:], strict=False)]
    conn.send((name, op.route, jacobian is not None, info, phases, _status_mib("VmHWM") - base, os.getloadavg()[0]))
    conn.close()


def _child(ctx, target, *args):
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, child))
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-memory-gb", type=float, default=1.0)
    ap.add_argument("--modules", nargs="*", default=MODULES, help="role.block, e.g. mlp_out.0")
    ap.add_argument("--own", action="store_true", help="each operator computes its own D̃ (no chain)")
    ap.add_argument("--save", help="a directory to write each module's converged top 25 to (role.block.pt)")
    args = ap.parse_args()
    print(
        f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s), N = {args.contexts}, "
        f"max_memory_gb {args.max_memory_gb:g}, load {os.getloadavg()[0]:.1f}"
    )
    # Spawned, not forked: a fork of a process whose OpenMP pool has started can hang.
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        jacobians = None
        if not args.own:
            jacobians = os.path.join(tmp, "jacobians")
            stored, wall, cpu, peak, load = _child(
                ctx, chain, args.modules, args.contexts, args.threads, args.max_memory_gb, jacobians
            )
            print(
                f"chain (D̃ of {len(stored)} modules): {wall:.1f} s ({cpu:.1f} CPU), peak {peak:.0f} MB, load {load:.1f}"
            )
        header = "module | route | D̃ stored | setup s (CPU) | Lanczos 50 s (CPU) | converged s (CPU) | products | "
        print(f"| {header}top 25 s | peak MB | load |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for spec in args.modules:
            name, route, stored, info, phases, peak, load = _child(
                ctx, run, spec, args.contexts, args.threads, args.max_memory_gb, args.save, jacobians
            )
            (sw, sc), (lw, lc), (ew, ec) = phases
            print(
                f"| {name} | {route} | {'yes' if stored else 'no'} | {sw:.1f} ({sc:.1f}) | {lw:.1f} ({lc:.1f}) | "
                f"{ew:.1f} ({ec:.1f}) | {info.matvecs} | {sw + ew:.1f} | {peak:.0f} | {load:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
