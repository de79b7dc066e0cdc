"""Benchmark (not a test): the top 200 of the full and both layer diag_mean kernels of the p = 113
MLP, however a user asks for them. Each way runs in its own spawned process on the same trained
model (float32, as the workflow's ``mlp_p113``); time around the eigen computation only.

- one object, ``layers`` then eigenpairs of the three kernels;
- one object, three ``eigenpairs`` calls: full first, then the layers;
- one object, three ``eigenpairs`` calls: the layers first, then full;
- three one-call conveniences (``entk.top_eigenpairs(model, x, 200, params=...)``), each its own object.

Run from the repository root (≈ 3 min on 2 cores):

    .venv/bin/python benchmarks/p113_calls.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from entk_bench import _mlp
from tms_bench import _machine, _reset_peak_rss, _status_kib

GROUPS = {"layer1": ["fc1"], "layer2": ["fc2"]}
K = 200


def way(name: str, job: dict, queue) -> None:
    import entk

    torch.set_num_threads(job["threads"])
    model, x = _mlp(job["p"], job, torch.float32)
    _reset_peak_rss()
    t = time.perf_counter()
    if name == "convenience":
        vals = {
            g: entk.top_eigenpairs(model, x, K, params=spec, outputs="diag_mean")[0]
            for g, spec in {"full": None, **GROUPS}.items()
        }
    else:
        ntk = entk.NTK(model, x, groups=GROUPS, outputs="diag_mean")
        order = {
            "layers_then": [None, "layer1", "layer2"],
            "full_first": [None, "layer1", "layer2"],
            "layers_first": ["layer1", "layer2", None],
        }[name]
        if name == "layers_then":
            ntk.layers()
        vals = {g or "full": ntk.eigenpairs(K, g)[0] for g in order}
    seconds = time.perf_counter() - t
    queue.put(
        {
            "seconds": seconds,
            "rss_gib": _status_kib("VmHWM") / 2**20,
            "vals": {g: v.double().numpy() for g, v in vals.items()},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, default=113)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    job = {"p": args.p, "threads": args.threads, "seed": 0, "mlp_epochs": 200}
    print(
        f"# p = {args.p}: top {K} of full + both layer diag_mean kernels, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print("\n".join(f"{k:12s}{v}" for k, v in _machine().items()))
    ctx = mp.get_context("spawn")
    results = {}
    for name in ("layers_then", "full_first", "layers_first", "convenience"):
        queue = ctx.Queue()
        proc = ctx.Process(target=way, args=(name, job, queue))
        proc.start()
        results[name] = queue.get()
        proc.join()
        print(f"  {name:14s} {results[name]['seconds']:6.1f} s   peak RSS {results[name]['rss_gib']:.2f} GiB")
    base = results["layers_then"]["vals"]
    worst = max(float(abs(r["vals"][g] - base[g]).max() / abs(base[g]).max()) for r in results.values() for g in base)
    print(f"  max relative eigenvalue difference between the ways: {worst:.1e}")


if __name__ == "__main__":
    main()
