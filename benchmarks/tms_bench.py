"""Benchmark (not a test): top-k eigenpairs of one TMS model's flattened, importance-rescaled eNTK.

Compares ``entk.top_eigenpairs`` (compact factor F = J, eigenpairs from the small Gram Fᵀ F) with
the reference method of the paper's code, written here independently of entk's kernel code:
full per-sample Jacobian by ``vmap(jacrev)``, dense (C·N)² kernel K = J Jᵀ by contraction, dense
``torch.linalg.eigh``, top k taken descending (docs/spec.md §1, "Notation").

The model is trained once in this (parent) process; each method then runs in its own freshly
spawned child process so that its time (measured in the child around the computation only) and its
peak resident memory (VmHWM, reset just before the computation) are its own.

Run from the repository root:

    .venv/bin/python benchmarks/tms_bench.py            # paper size: N=500, C=50 -> K is 25000²

At float64 the reference needs about 4·(C·N)²·8 B ≈ 19 GiB (K, eigh's copy of it, and the
divide-and-conquer workspace of 2·(C·N)²) and takes of the order of an hour on 2 cores.
``--ref-dtype auto`` (the default) falls back to float32 for the reference when the estimate does
not fit in the memory available now.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import statistics
import threading
import time

import numpy as np
import torch

GiB = 2**30


# ---------------------------------------------------------------------------- memory and machine


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (e.g. VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _mem_available_bytes() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def _machine() -> dict[str, str]:
    model, cores = "unknown", "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            if key.strip() == "cpu cores" and cores == "?":
                cores = value.strip()
    with open("/proc/meminfo") as fh:
        total = int(fh.readline().split()[1]) * 1024
    return {
        "cpu": model,
        "cores": f"{os.cpu_count()} logical ({cores} cores per socket as /proc/cpuinfo reports)",
        "memory": f"{total / GiB:.1f} GiB total, {_mem_available_bytes() / GiB:.1f} GiB available at start",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "blas/lapack": "MKL" if torch.backends.mkl.is_available() else "non-MKL",
    }


class _Heartbeat:
    """Prints elapsed time, the stage, this process's RSS and the system's MemAvailable every few seconds."""

    def __init__(self, label: str, every: float):
        self.label, self.every = label, every
        self.stage = "setup"
        self.stage_start = time.perf_counter()
        self.min_available = _mem_available_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def set(self, stage: str) -> None:
        self.stage, self.stage_start = stage, time.perf_counter()
        print(f"  [{self.label}] {stage} ...", flush=True)

    def _run(self) -> None:
        start = time.perf_counter()
        next_print = start + self.every
        while not self._stop.wait(min(self.every, 2.0)):
            avail = _mem_available_bytes()
            self.min_available = min(self.min_available, avail)
            now = time.perf_counter()
            if now >= next_print:
                next_print += self.every
                print(
                    f"  [{self.label}] {now - start:7.0f} s elapsed | {self.stage}: {now - self.stage_start:6.0f} s"
                    f" | RSS {_status_kib('VmRSS') / 2**20:5.2f} GiB | MemAvailable {avail / GiB:5.2f} GiB"
                    f" | load {_loadavg()}",
                    flush=True,
                )


# ---------------------------------------------------------------------------- the two methods


def _build(job: dict, dtype: torch.dtype):
    from entk.kinds.models import TMS  # the model definition only; no kernel code

    model = TMS(job["n_features"], job["m"])
    model.load_state_dict(job["state_dict"])
    model = model.to(dtype)
    x = job["x"].to(dtype)
    w = (job["importance"] ** (job["beta"] / 2)).to(dtype)  # β weights I_c^(β/2)
    return model, x, w


def _entk_method(job: dict, hb: _Heartbeat) -> tuple[np.ndarray, np.ndarray, dict]:
    import entk

    model, x, w = _build(job, getattr(torch, job["dtype"]))
    hb.set("entk.top_eigenpairs")
    vals, vecs = entk.top_eigenpairs(model, x, job["k"], outputs="flatten", output_weights=w)
    return vals.numpy(), vecs.numpy(), {}


def per_sample_jacobian(model: torch.nn.Module, x: torch.Tensor, names: list[str] | None = None) -> torch.Tensor:
    """The paper's reference Jacobian (N, C, P) by vmap(jacrev), parameters in ``names`` order (default all)."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params) if names is None else names

    def f_one(sel: dict, x1: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**params, **sel}, (x1.unsqueeze(0),)).squeeze(0)  # (C,)

    jac = vmap(jacrev(f_one), in_dims=(None, 0))({k: params[k] for k in names}, x)  # {name: (N, C, *shape)}
    return torch.cat([jac[k].flatten(2) for k in names], dim=2)


def _reference_method(job: dict, hb: _Heartbeat) -> tuple[np.ndarray, np.ndarray, dict]:
    model, x, w = _build(job, getattr(torch, job["ref_dtype"]))
    stages = {}
    t = time.perf_counter()
    hb.set("per-sample Jacobian, vmap(jacrev)")
    jn = per_sample_jacobian(model, x)
    n, c, p = jn.shape
    # Row c of J scaled by w_c, then class-major: row c·N + n.
    big_j = (w[None, :, None] * jn).transpose(0, 1).reshape(c * n, p)
    del jn
    stages["jacobian"] = time.perf_counter() - t
    t = time.perf_counter()
    hb.set(f"dense K = J Jᵀ ({c * n}×{c * n}, {(c * n) ** 2 * big_j.element_size() / GiB:.2f} GiB)")
    kernel = torch.einsum("ip,jp->ij", big_j, big_j)
    stages["kernel"] = time.perf_counter() - t
    t = time.perf_counter()
    hb.set(f"dense torch.linalg.eigh of {c * n}×{c * n}")
    evals, evecs = torch.linalg.eigh(kernel)
    stages["eigh"] = time.perf_counter() - t
    k = job["k"]
    vals = evals.flip(0)[:k].clone()
    vecs = evecs.flip(1)[:, :k].clone()
    return vals.numpy(), vecs.numpy(), stages


def _child(method: str, job: dict, queue) -> None:
    """Runs one method in a fresh process and sends back eigenpairs, time and memory."""
    torch.set_num_threads(job["threads"])
    fn = {"entk": _entk_method, "reference": _reference_method}[method]
    with _Heartbeat(method, job["heartbeat"]) as hb:
        baseline = _status_kib("VmRSS")
        reset = _reset_peak_rss()
        t0 = time.perf_counter()
        vals, vecs, stages = fn(job, hb)
        wall = time.perf_counter() - t0
        peak = _status_kib("VmHWM")
        hb.set("done")
    warm = []
    if method == "entk":  # repeated calls, for information: the first one pays one-time costs
        import entk

        model, x, w = _build(job, getattr(torch, job["dtype"]))
        for _ in range(job["repeats"]):
            t = time.perf_counter()
            entk.top_eigenpairs(model, x, job["k"], outputs="flatten", output_weights=w)
            warm.append(time.perf_counter() - t)
    queue.put(
        {
            "vals": vals,
            "vecs": vecs,
            "wall": wall,
            "stages": stages,
            "baseline_kib": baseline,
            "peak_kib": peak,
            "peak_reset": reset,
            "min_available": hb.min_available,
            "warm": warm,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
    )


def _run_child(ctx, method: str, job: dict) -> dict:
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(method, job, queue), name=f"bench-{method}")
    print(f"\n== {method}: child process started (load {_loadavg()}) ==", flush=True)
    proc.start()
    try:
        result = None
        while result is None:
            try:
                result = queue.get(timeout=5)
            except Exception:  # queue.Empty: keep waiting unless the child died
                if not proc.is_alive():
                    raise RuntimeError(
                        f"{method} child exited with code {proc.exitcode} without a result"
                        + (" (killed: out of memory?)" if proc.exitcode == -9 else "")
                    ) from None
        proc.join()
    except BaseException:
        if proc.is_alive():
            proc.terminate()
            proc.join()
        raise
    return result


# ---------------------------------------------------------------------------- driver


def _train(args) -> dict:
    from entk.kinds.models import TMS, tms_data, tms_importance
    from entk.kinds.training import train_tms

    gen = torch.Generator().manual_seed(args.seed)
    x = tms_data(args.n_points, args.n_features, args.sparsity, gen)  # data first, then the model
    model = TMS(args.n_features, args.m, generator=gen)
    importance = tms_importance(args.n_features, 0.8)
    t = time.perf_counter()
    losses = train_tms(model, x, importance.float(), steps=args.steps, lr=1e-3, log_every=max(1, args.steps // 5))
    print(f"trained in {time.perf_counter() - t:.1f} s, final loss {losses[-1]:.4g}" if losses else "no training")
    return {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "x": x,
        "importance": importance,
        "n_features": args.n_features,
        "m": args.m,
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def _reference_estimate_bytes(dim: int, n_params: int, itemsize: int) -> int:
    # K, the column-major copy eigh makes (it becomes the eigenvectors), syevd's 2·dim² workspace,
    # J, and about 0.5 GiB for the interpreter and torch.
    return 4 * dim * dim * itemsize + 2 * dim * n_params * itemsize + GiB // 2


def _fmt_gib(kib: float) -> str:
    return f"{kib / 2**20:.3f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--m", type=int, default=10, help="hidden width m of the TMS model")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--k", type=int, default=80, help="number of top eigenpairs")
    ap.add_argument("--beta", type=float, default=1.0, help="importance exponent: output weights I_c^(β/2)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="entk's dtype")
    ap.add_argument(
        "--ref-dtype",
        choices=["auto", "float64", "float32"],
        default="auto",
        help="reference dtype; auto = --dtype if its memory estimate fits in MemAvailable, else float32",
    )
    ap.add_argument("--steps", type=int, default=5000, help="Adam steps (lr 1e-3)")
    ap.add_argument("--n-points", type=int, default=500, help="N (paper: 500)")
    ap.add_argument("--n-features", type=int, default=50, help="n = C (paper: 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every process")
    ap.add_argument("--heartbeat", type=float, default=60.0, help="seconds between progress lines")
    ap.add_argument("--repeats", type=int, default=3, help="extra warm entk calls (information only)")
    ap.add_argument("--rtol", type=float, default=1e-5, help="eigenvalue agreement required")
    ap.add_argument("--min-speedup", type=float, default=100.0, help="time ratio required")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    machine = _machine()
    print("# TMS flattened eNTK: entk.top_eigenpairs vs dense reference")
    print(f"date        {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for key, value in machine.items():
        print(f"{key:<11} {value}")
    print(f"threads     {args.threads} (torch.set_num_threads in every process)")
    load_before = _loadavg()
    print(f"load before {load_before} (1/5/15 min)")

    model = _train(args)
    dim = args.n_features * args.n_points
    want = args.dtype if args.ref_dtype == "auto" else args.ref_dtype
    itemsize = torch.empty(0, dtype=getattr(torch, want)).element_size()
    estimate, available = _reference_estimate_bytes(dim, model["n_params"], itemsize), _mem_available_bytes()
    ref_dtype = want
    if args.ref_dtype == "auto" and estimate > 0.95 * available:
        ref_dtype = "float32"
    print(
        f"model       TMS n={args.n_features} m={args.m} S={args.sparsity}, P={model['n_params']} parameters; "
        f"N={args.n_points}; kernel {dim}×{dim}; k={args.k}; β={args.beta}"
    )
    print(
        f"reference   {want} needs ≈ {estimate / GiB:.1f} GiB, MemAvailable {available / GiB:.1f} GiB "
        f"-> reference runs at {ref_dtype}" + ("" if ref_dtype == want else " (fallback: estimate does not fit)")
    )
    print(f"entk        {args.dtype}")

    job = {
        **model,
        "k": args.k,
        "beta": args.beta,
        "dtype": args.dtype,
        "ref_dtype": ref_dtype,
        "threads": args.threads,
        "heartbeat": args.heartbeat,
        "repeats": args.repeats,
    }
    ctx = mp.get_context("spawn")
    res = {"entk": _run_child(ctx, "entk", job)}
    print(f"entk: {res['entk']['wall']:.3f} s, peak RSS {_fmt_gib(res['entk']['peak_kib'])}", flush=True)
    res["reference"] = _run_child(ctx, "reference", job)
    print(f"reference: {res['reference']['wall']:.1f} s, peak RSS {_fmt_gib(res['reference']['peak_kib'])}")
    load_after = _loadavg()

    e, r = res["entk"], res["reference"]
    lam, lam_ref = e["vals"].astype(np.float64), r["vals"].astype(np.float64)
    rel = np.abs(lam - lam_ref) / np.abs(lam_ref)
    worst = int(np.argmax(rel))
    cosines = np.abs(np.sum(e["vecs"].astype(np.float64) * r["vecs"].astype(np.float64), axis=0))
    time_ratio = r["wall"] / e["wall"]
    mem_ratio = r["peak_kib"] / e["peak_kib"]
    above = {m: res[m]["peak_kib"] - res[m]["baseline_kib"] for m in res}
    above_ratio = above["reference"] / max(above["entk"], 1)
    ok_vals, ok_time = rel.max() <= args.rtol, time_ratio >= args.min_speedup

    print(f"\n## Results (N={args.n_points}, C={args.n_features}, kernel {dim}×{dim}, top {args.k}, β={args.beta})\n")
    print("| method | dtype | wall time | peak RSS | peak RSS above process baseline |")
    print("|---|---|---:|---:|---:|")
    print(
        f"| entk.top_eigenpairs | {args.dtype} | {e['wall']:.3f} s | {_fmt_gib(e['peak_kib'])} "
        f"| {_fmt_gib(above['entk'])} |"
    )
    print(
        f"| reference: vmap(jacrev) + dense K + eigh | {ref_dtype} | {r['wall']:.1f} s | {_fmt_gib(r['peak_kib'])} "
        f"| {_fmt_gib(above['reference'])} |"
    )
    print(f"| ratio reference / entk | | {time_ratio:.0f}× | {mem_ratio:.0f}× | {above_ratio:.0f}× |")
    print()
    print("reference stages: " + ", ".join(f"{name} {sec:.1f} s" for name, sec in r["stages"].items()))
    if e["warm"]:
        print(
            f"entk warm calls (same child, after the timed one): median {statistics.median(e['warm']):.3f} s "
            f"over {len(e['warm'])} -> time ratio {r['wall'] / statistics.median(e['warm']):.0f}×"
        )
    print(
        f"process baseline RSS before the computation (torch imported, model built): "
        f"entk {_fmt_gib(e['baseline_kib'])}, reference {_fmt_gib(r['baseline_kib'])}; "
        f"peak reset before computing: {e['peak_reset'] and r['peak_reset']}"
    )
    print(f"lowest system MemAvailable during the reference: {r['min_available'] / GiB:.2f} GiB")
    print(f"eigenvalues: λ_1 = {lam_ref[0]:.6g}, λ_{args.k} = {lam_ref[-1]:.6g} (reference)")
    print(
        f"max relative eigenvalue error max_i |λ_i − λ_i^ref| / |λ_i^ref| = {rel.max():.3e} (at i = {worst + 1}) "
        f"-> {'PASS' if ok_vals else 'FAIL'} (≤ {args.rtol:g})"
    )
    print(f"speed-up (time ratio) {time_ratio:.0f}× -> {'PASS' if ok_time else 'FAIL'} (≥ {args.min_speedup:g}×)")
    print(
        f"eigenvectors (information): |⟨v_i, v_i^ref⟩| min {cosines.min():.10f} (i = {int(np.argmin(cosines)) + 1}), "
        f"median {np.median(cosines):.12f}"
    )
    print(f"\nload before {load_before}, after {load_after} (1/5/15 min)")
    print(f"whole benchmark {time.perf_counter() - started:.0f} s (including training and process start-up)")
    raise SystemExit(0 if ok_vals and ok_time else 1)


if __name__ == "__main__":
    main()
