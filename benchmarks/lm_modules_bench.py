"""Benchmark (not a test): per module of the default LM (docs/spec.md §4), the converged top 25 of
K = S^½ J Jᵀ S^½ and the author's 50-step Lanczos on entk's products, at the issue's size.

The model is the `stories` experiment's Gemma-3 (d_model 64, 3 layers, 4 heads, MLP 256, T = 32) with
random weights from a fixed seed (the cost does not depend on training; the solver's iteration count
does a little), N random contexts. Each module runs in a child process of its own, with the torch
threads of a workflow eigen job (1 unless told): wall and CPU seconds of the operator's setup (capture
and stored downstream Jacobian), of the converged solver and of the 50-step Lanczos, and the peak RSS
(VmHWM) above what the process held before the operator (the imported libraries and the model).

    PYTHONPATH=src .venv/bin/python benchmarks/lm_modules_bench.py --contexts 1024 --max-memory-gb 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import time

import torch

from entk import lm
from entk.kinds import story_lm

SETTINGS = {"d_model": 64, "n_layers": 3, "n_heads": 4, "d_mlp": 256, "context_length": 32}
MODULES = ["mlp_out:2", "attn_out:2", "mlp_out:1", "attn_out:1", "mlp_out:0", "attn_out:0", "embedding:0"]


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def run(spec: str, contexts: int, threads: int, max_memory_gb: float, save: str | None, conn) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = story_lm.build(SETTINGS).eval()
    ids = torch.randint(3, model.config.vocab_size, (contexts, SETTINGS["context_length"]))
    u = lm.unembedding(model)
    root = lm.metric_sqrt(u.T @ u)
    role, block = spec.split(":")
    name = lm.module_roles(model)[role][int(block)]
    base = _status_mib("VmRSS")
    marks = [(time.perf_counter(), time.process_time())]
    op = lm.module_operator(model, ids, name, metric_sqrt=root, max_memory_gb=max_memory_gb)
    marks.append((time.perf_counter(), time.process_time()))
    vals, vecs, info = op.eigenpairs(25, return_info=True)
    marks.append((time.perf_counter(), time.process_time()))
    lm.lanczos(op.matvec(), op.dim, steps=50, k=25)
    marks.append((time.perf_counter(), time.process_time()))
    if save:
        # To compare two versions of the operator: their top 25 should agree to round-off.
        torch.save({"values": vals, "vectors": vecs}, os.path.join(save, f"{spec.replace(':', '.')}.pt"))
    phases = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:], strict=False)]
    conn.send((name, op.route, op._chunk, info, phases, _status_mib("VmHWM") - base, os.getloadavg()[0]))
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-memory-gb", type=float, default=1.0)
    ap.add_argument("--modules", nargs="*", default=MODULES, help="role:block, e.g. mlp_out:0")
    ap.add_argument("--save", help="a directory to write each module's converged top 25 to (role.block.pt)")
    args = ap.parse_args()
    print(
        f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s), N = {args.contexts}, "
        f"max_memory_gb {args.max_memory_gb:g}, load {os.getloadavg()[0]:.1f}"
    )
    header = "module | route | chunk | setup s (CPU) | top 25 s (CPU) | products | Lanczos 50 s (CPU) | peak MB | load"
    print(f"| {header} |")
    print("|---|---|---|---|---|---|---|---|---|")
    # Spawned, not forked: a fork of a process whose OpenMP pool has started can hang.
    ctx = mp.get_context("spawn")
    for spec in args.modules:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=run, args=(spec, args.contexts, args.threads, args.max_memory_gb, args.save, child))
        proc.start()
        name, route, chunk, info, phases, peak, load = parent.recv()
        proc.join()
        (sw, sc), (ew, ec), (lw, lc) = phases
        print(
            f"| {name} | {route} | {chunk} | {sw:.1f} ({sc:.1f}) | {ew:.1f} ({ec:.1f}) | {info.matvecs} | "
            f"{lw:.1f} ({lc:.1f}) | {peak:.0f} | {load:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
