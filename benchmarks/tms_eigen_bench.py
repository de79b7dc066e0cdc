"""Benchmark (not a test): the workflow's TMS eigen computations, before and after a change to entk.eigen.

For each trained TMS model and each kernel (plain, β = 1, β = 0.3; docs/spec.md §1) it times the
flattened eNTK (``entk.compact_ntk``) plus its top-k eigenpairs (``kernel_eigenpairs``) with the current
entk.eigen and with entk.eigen as it was at ``--before`` (loaded from git into this process, so both run
in the same process, interleaved, on the same machine state), and also the current code with
method="gram"; each version's eigenvalues are compared with an exact reference, eigvalsh of the Gram
Fᵀ F of the kernel's factor F (K = F Fᵀ; the block solver stops at residual 1e-6·λ₁).

Run from the repository root, with models from a workflow run:

    .venv/bin/python benchmarks/tms_eigen_bench.py --models results/m*_S*/checkpoints.pt
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
import types

import torch

import entk
import entk.eigen
from entk.recipes import tms_importance_weights
from entk.runner import from_bundle

BETAS = (None, 1.0, 0.3)  # None: the plain (un-rescaled) kernel


def eigen_module(rev: str) -> types.ModuleType:
    """entk.eigen as of git revision ``rev``, as a fresh module (its imports resolve to the current entk)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/entk/eigen.py"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"entk_eigen_{rev}")
    # Dataclasses look their module up in sys.modules while the class is being made.
    sys.modules[module.__name__] = module
    exec(compile(source, f"{rev}:src/entk/eigen.py", "exec"), module.__dict__)  # noqa: S102 (our own history)
    return module


def kernel(model, x, importance, beta):
    kernel = entk.compact_ntk(model, x, outputs="flatten")
    return kernel if beta is None else kernel.scale_outputs(importance ** (beta / 2))


def run(eigen, method, model, x, importance, beta, k):
    """Seconds for kernel + top-k eigenpairs, the eigenvalues and the method chosen."""
    start = time.perf_counter()
    vals, _, info = eigen.kernel_eigenpairs(kernel(model, x, importance, beta), k, method=method, return_info=True)
    return time.perf_counter() - start, vals, info.method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="checkpoints.pt bundles of TMS experiments")
    parser.add_argument("--before", default="71060ec", help="git revision of the 'before' entk.eigen")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    versions = {
        "before": (eigen_module(args.before), "auto"),
        "after": (entk.eigen, "auto"),
        "after gram": (entk.eigen, "gram"),
    }
    print(f"# TMS eigen benchmark {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()}, before = {args.before}; "
        f"per version: min/median seconds over {args.repeats} (method) max relative error of λ"
    )
    print(f"{'model':9s} {'beta':5s} " + " ".join(f"{v:33s}" for v in versions) + " before/after")
    for path in args.models:
        model, x, meta = from_bundle(path)
        importance = tms_importance_weights(meta["settings"])
        model, x, importance = model.double(), x.double(), importance.double()
        name = os.path.basename(os.path.dirname(path))
        for beta in BETAS:
            f = kernel(model, x, importance, beta).data
            exact = torch.linalg.eigvalsh(f.T @ f).flip(0)[: args.top_k]
            times, cells = {v: [] for v in versions}, {}
            for _ in range(args.repeats):
                for v, (eigen, method) in versions.items():  # interleaved, so all see the same load
                    seconds, vals, chosen = run(eigen, method, model, x, importance, beta, args.top_k)
                    times[v].append(seconds)
                    error = float(((vals - exact).abs() / exact).max())
                    cells[v] = f"{min(times[v]):5.2f}/{statistics.median(times[v]):5.2f} ({chosen}) {error:.0e}"
            ratio = min(times["before"]) / min(times["after"])
            label = "plain" if beta is None else f"{beta:g}"
            print(f"{name:9s} {label:5s} " + " ".join(f"{c:33s}" for c in cells.values()) + f" {ratio:.1f}", flush=True)
    print(f"# load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
