"""Benchmark (not a test): entk against the paper's reference method and the torch.func NTK tutorial.

Cases (issue "speed and scale"), all in one run and printed as one table:

- TMS at the paper's size (N = 500, C = 50: a 25000² flattened kernel, β = 1), top 80;
- modular-addition MLP p = 29 (hidden 512): diag_mean kernels of the full model and of each layer, top 200;
- the same at p = 59 and p = 113, plus the top 50 of the flattened eNTK at p = 113.

Methods:

- entk: one ``entk.NTK`` per case and its ``eigenpairs`` (the three MLP kernels from one object).
- reference (the paper's code, written here independently of entk's kernel code): the per-sample
  Jacobian by ``vmap(jacrev)``, the dense kernel by contraction, a dense ``torch.linalg.eigh``.
- tutorial-jac: the torch.func NTK tutorial's Jacobian contraction (the (N, N, C, C) kernel by
  ``einsum('Naf,Mbf->NMab')``), then the same dense eigh.
- tutorial-vps: the tutorial's NTK-vector products (``vmap`` over sample pairs of a vjp then a jvp
  per output basis vector), then the same dense eigh.

Every measurement runs in its own spawned child process (time around the computation only; peak RSS
= the child's VmHWM, reset before it), one after another, in this one invocation. Where a baseline
is too large for this machine its cost is *projected*, and the table says so: a dense eigh from one
measured on a smaller random kernel in the same run (× (dim / dim₀)³), memory from the arrays it
must hold, the tutorial's NTK-vector products from the first rows of sample pairs, and p = 59 /
p = 113 references from the p = 29 reference's measured stages scaled by their flop counts.
Eigenvalue errors compare entk with the reference's eigenvalues where those are measured (p = 29)
and, for TMS, with ARPACK (``scipy.sparse.linalg.eigsh``) on the reference's dense kernel.

Run from the repository root (about 10 minutes on 2 cores):

    .venv/bin/python benchmarks/entk_bench.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import queue as queue_module
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tms_bench import (
    _loadavg,
    _machine,
    _mem_available_bytes,
    _reset_peak_rss,
    _status_kib,
    per_sample_jacobian,
)

GiB = 2**30
# Blocks of sample pairs (rows of x1 × columns of x2) timed for the tutorial baselines that do not
# fit or would take too long at full size; projected to all N² pairs.
VPS_BLOCK = {"tms": (4, 500), "p29": (1, 64)}
JAC_SUBSET_P29 = 120


def _mark() -> float:
    """Start of the measured computation: reset the peak RSS (setup and training excluded), start the clock."""
    _reset_peak_rss()
    return time.perf_counter()


# ---------------------------------------------------------------------------- models and data


def _tms(job: dict):
    from entk.kinds.models import TMS, tms_data, tms_importance
    from entk.kinds.training import train_tms

    gen = torch.Generator().manual_seed(job["seed"])
    x = tms_data(500, 50, 0.9, gen)
    model = TMS(50, 10, generator=gen)
    importance = tms_importance(50, 0.8)
    train_tms(model, x, importance.float(), steps=job["tms_steps"], lr=1e-3, log_every=10**9)
    model = model.double()
    return (
        model,
        x.double(),
        importance.double() ** 0.5,
    )  # β = 1: output weights I_c^(β/2)


def _mlp(p: int, job: dict, dtype: torch.dtype):
    """ModMLP(p, 512) after ``mlp_epochs`` full-batch AdamW steps with the workflow's hyperparameters."""
    from entk.kinds.models import ModMLP, modadd_inputs, modadd_labels, modadd_split
    from entk.kinds.training import train_modadd

    gen = torch.Generator().manual_seed(job["seed"])
    model = ModMLP(p, 512, generator=gen).to(dtype)
    x, y = modadd_inputs(p).to(dtype), modadd_labels(p)
    train_idx, test_idx = modadd_split(p, 0.7, gen)
    train_modadd(
        model,
        x,
        y,
        train_idx,
        test_idx,
        epochs=job["mlp_epochs"],
        lr=0.05,
        weight_decay=0.01,
        checkpoint_epochs=[],
        save_checkpoint=lambda *_: None,
        log=lambda _: None,
    )
    return model, x


LAYERS = {"layer1": ["fc1"], "layer2": ["fc2"]}


# ---------------------------------------------------------------------------- the methods


def _top(kernel: torch.Tensor, k: int) -> np.ndarray:
    return torch.linalg.eigh(kernel)[0].flip(0)[:k].double().numpy()


def entk_tms(job):
    import entk

    model, x, w = _tms(job)
    t = _mark()
    vals, _ = entk.NTK(model, x, outputs="flatten", output_weights=w).eigenpairs(80)
    return time.perf_counter() - t, {"vals": vals.numpy()}


def reference_tms(job):
    """J and K measured; the dense eigh of K is projected (its full run: benchmarks/tms_bench.py). The check
    eigenvalues are those of the reference J's (P, P) Gram Jᵀ J, which equal K's nonzero ones."""
    model, x, w = _tms(job)
    t = _mark()
    jn = per_sample_jacobian(model, x) * w[None, :, None]
    big_j = jn.transpose(0, 1).reshape(-1, jn.shape[2])
    kernel = big_j @ big_j.T
    build = time.perf_counter() - t
    check = _top(big_j.T @ big_j, 80)
    return build, {"vals": check, "dim": kernel.shape[0], "build_s": build}


def tutorial_jac_tms(job):
    """The tutorial's Jacobian contraction: (N, N, C, C) = einsum('Naf,Mbf->NMab') of per-sample Jacobians."""
    model, x, w = _tms(job)
    t = _mark()
    jn = per_sample_jacobian(model, x) * w[None, :, None]
    ntk = torch.einsum("Naf,Mbf->NMab", jn, jn)
    kernel = ntk.permute(2, 0, 3, 1).reshape(jn.shape[0] * jn.shape[1], -1)  # class-major, as the reference
    return time.perf_counter() - t, {"dim": kernel.shape[0]}


def tutorial_vps(job, case: str):
    """The tutorial's NTK-vector products on a block of sample pairs (VPS_BLOCK), projected to all N² pairs."""
    from torch.func import functional_call, jvp, vjp, vmap

    if case == "tms":
        model, x, w = _tms(job)
    else:
        model, x = _mlp(29, job, torch.float64)
        w = torch.ones(29, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_single(p, x1):
        return functional_call(model, p, (x1.unsqueeze(0),)).squeeze(0) * w

    def get_ntk(x1, x2):
        out, vjp_fn = vjp(lambda p: f_single(p, x1), params)

        def slice_(vec):
            return jvp(lambda p: f_single(p, x2), (params,), vjp_fn(vec))[1]

        return vmap(slice_)(torch.eye(out.numel(), dtype=out.dtype))

    rows, cols = VPS_BLOCK[case]
    t = _mark()
    block = vmap(vmap(get_ntk, (None, 0)), (0, None))(x[:rows], x[:cols])  # (rows, cols, C, C)
    elapsed = time.perf_counter() - t
    n = x.shape[0]
    return elapsed * n * n / (rows * cols), {
        "block_s": elapsed,
        "block": tuple(block.shape),
        "n": n,
    }


def entk_mlp(job, p: int):
    import entk

    model, x = _mlp(p, job, getattr(torch, job["mlp_dtype"][str(p)]))
    t = _mark()
    ntk = entk.NTK(model, x, groups=LAYERS, outputs="diag_mean")
    vals = {name or "full": ntk.eigenpairs(200, name)[0].double().numpy() for name in (None, *LAYERS)}
    return time.perf_counter() - t, {"vals": vals}


def entk_flat(job, p: int):
    import entk

    model, x = _mlp(p, job, getattr(torch, job["mlp_dtype"][str(p)]))
    t = _mark()
    vals, _, info = entk.NTK(model, x, outputs="flatten").eigenpairs(50, return_info=True)
    return time.perf_counter() - t, {
        "vals": vals.numpy(),
        "products": info.solver.matvecs,
        "side": info.solver.side,
    }


def reference_mlp(job, p: int):
    """Per layer: J_l (N, C, P_l) by vmap(jacrev), K_l = Σ_c J_c J_cᵀ / C by contraction, eigh; full = sum."""
    model, x = _mlp(p, job, getattr(torch, job["mlp_dtype"][str(p)]))
    stages, vals, kernels = {"jacobian": 0.0, "kernel": 0.0, "eigh": 0.0}, {}, {}
    t0 = _mark()
    for name, modules in LAYERS.items():
        t = time.perf_counter()
        jn = per_sample_jacobian(model, x, [f"{m}.weight" for m in modules])
        stages["jacobian"] += time.perf_counter() - t
        t = time.perf_counter()
        kernels[name] = torch.einsum("ncp,mcp->nm", jn, jn) / jn.shape[1]
        stages["kernel"] += time.perf_counter() - t
        del jn
    kernels["full"] = kernels["layer1"] + kernels["layer2"]
    for name in ("full", "layer1", "layer2"):
        t = time.perf_counter()
        vals[name] = _top(kernels[name], 200)
        stages["eigh"] += time.perf_counter() - t
    return time.perf_counter() - t0, {"vals": vals, "stages": stages}


def tutorial_jac_mlp(job):
    """The tutorial's (N, N, C, C) contraction of the full Jacobian (then diag_mean = the mean of its C
    diagonal blocks) on the first JAC_SUBSET_P29 samples, projected to N: its einsum is C× the diag_mean work."""
    model, x = _mlp(29, job, torch.float64)
    n0 = JAC_SUBSET_P29
    t = _mark()
    jn = per_sample_jacobian(model, x)
    jac_s = time.perf_counter() - t
    t = time.perf_counter()
    ntk = torch.einsum("Naf,Mbf->NMab", jn[:n0], jn[:n0])
    ntk.diagonal(dim1=2, dim2=3).mean(-1)
    contract = time.perf_counter() - t
    n = x.shape[0]
    return jac_s + contract * (n / n0) ** 2, {
        "jac_s": jac_s,
        "contract_s": contract,
        "n0": n0,
        "n": n,
    }


def eigh_rate(job):
    """Seconds of a dense float64 eigh of a random (dim₀, dim₀) PSD kernel (the projection's base)."""
    n = job["eigh_dim"]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n // 4, generator=g, dtype=torch.float64)
    kernel = a @ a.T
    t = _mark()
    torch.linalg.eigh(kernel)
    return time.perf_counter() - t, {"dim": n}


TASKS = {
    "entk_tms": entk_tms,
    "reference_tms": reference_tms,
    "tutorial_jac_tms": tutorial_jac_tms,
    "tutorial_vps_tms": lambda job: tutorial_vps(job, "tms"),
    "eigh_rate": eigh_rate,
    "entk_p29": lambda job: entk_mlp(job, 29),
    "reference_p29": lambda job: reference_mlp(job, 29),
    "tutorial_jac_p29": tutorial_jac_mlp,
    "tutorial_vps_p29": lambda job: tutorial_vps(job, "p29"),
    "entk_p59": lambda job: entk_mlp(job, 59),
    "entk_p113": lambda job: entk_mlp(job, 113),
    "entk_p113_flat": lambda job: entk_flat(job, 113),
}


# ---------------------------------------------------------------------------- child processes


def _child(task: str, job: dict, queue) -> None:
    torch.set_num_threads(job["threads"])
    try:
        wall, out = TASKS[task](job)
    except (
        RuntimeError,
        ValueError,
        MemoryError,
    ) as exc:  # reported in the table rather than ending the run
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        return
    queue.put({"wall": wall, **out, "peak_kib": _status_kib("VmHWM")})


def run(ctx, task: str, job: dict) -> dict:
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(task, job, queue), name=f"bench-{task}")
    start = time.perf_counter()
    proc.start()
    result = None
    while result is None:
        try:
            result = queue.get(timeout=5)
        except queue_module.Empty:  # keep waiting unless the child died
            if not proc.is_alive():
                result = {
                    "error": f"child exited with code {proc.exitcode}" + (" (out of memory?)" * (proc.exitcode == -9))
                }
    proc.join()
    took = time.perf_counter() - start
    status = result.get("error") or f"{result['wall']:.2f} s, peak RSS {result['peak_kib'] / 2**20:.2f} GiB"
    print(f"  {task:<18} {status}   (child {took:.0f} s, load {_loadavg()})", flush=True)
    return result


# ---------------------------------------------------------------------------- projections and table


def mlp_sizes(p: int, hidden: int = 512) -> dict[str, int]:
    n, c = p * p, p
    return {
        "n": n,
        "c": c,
        "p1": 2 * p * hidden,
        "p2": hidden * p,
        "P": 2 * p * hidden + hidden * p,
    }


def project_reference(ref29: dict, p: int, itemsize: int) -> tuple[float, float]:
    """(seconds, bytes) of the diag_mean reference at p from p = 29's measured stages: Jacobian ∝ N·C·P,
    contraction ∝ N²·C·P, eigh ∝ N³; memory = the largest layer Jacobian + three N² kernels + eigh's 3 N²."""
    a, b = mlp_sizes(29), mlp_sizes(p)
    st = ref29["stages"]
    seconds = (
        st["jacobian"] * (b["n"] * b["c"] * b["P"]) / (a["n"] * a["c"] * a["P"])
        + st["kernel"] * (b["n"] ** 2 * b["c"] * b["P"]) / (a["n"] ** 2 * a["c"] * a["P"])
        + st["eigh"] * (b["n"] / a["n"]) ** 3
    )
    return seconds, itemsize * (b["n"] * b["c"] * max(b["p1"], b["p2"]) + 6 * b["n"] ** 2)


def max_rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tms-steps", type=int, default=5000, help="Adam steps for the TMS model")
    ap.add_argument("--mlp-epochs", type=int, default=200, help="AdamW steps for the MLPs")
    ap.add_argument(
        "--eigh-dim",
        type=int,
        default=8000,
        help="dim₀ of the eigh timed for projections",
    )
    args = ap.parse_args()
    job = {
        "threads": args.threads,
        "seed": args.seed,
        "tms_steps": args.tms_steps,
        "mlp_epochs": args.mlp_epochs,
        "eigh_dim": args.eigh_dim,
        # The workflow's dtypes: float64 for the paper's sizes, float32 for the scale experiment.
        "mlp_dtype": {"29": "float64", "59": "float64", "113": "float32"},
    }
    print("# entk benchmark: eNTK spectra, entk vs reference vs torch.func tutorial")
    print(f"date        {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for key, value in _machine().items():
        print(f"{key:<11} {value}")
    print(f"threads     {args.threads}; load before {_loadavg()}; MemAvailable {_mem_available_bytes() / GiB:.1f} GiB")
    print(f"models      TMS trained {args.tms_steps} Adam steps; MLPs trained {args.mlp_epochs} AdamW steps\n")
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    r = {task: run(ctx, task, job) for task in TASKS}
    rows = []  # (case, method, dtype, seconds, peak GiB, eig err, how)

    def gib(res):
        return res["peak_kib"] / 2**20

    eig = r["eigh_rate"]

    def eigh_s(dim: int) -> float:
        return eig["wall"] * (dim / eig["dim"]) ** 3

    e, ref, tj, tv = (r[t] for t in ("entk_tms", "reference_tms", "tutorial_jac_tms", "tutorial_vps_tms"))
    if not any("error" in x for x in (e, ref, eig)):
        dim = ref["dim"]
        # K, eigh's copy, its 2·dim² workspace (tms_bench measured 19.07 GiB for this at float64).
        eigh_gib = 4 * dim**2 * 8 / GiB
        err = max_rel(e["vals"], ref["vals"])
        rows.append(
            (
                "TMS 25000², top 80",
                "entk",
                "float64",
                e["wall"],
                gib(e),
                f"{err:.1e}",
                "measured",
            )
        )
        rows.append(
            (
                "",
                "reference",
                "float64",
                ref["build_s"] + eigh_s(dim),
                max(gib(ref), eigh_gib),
                "",
                f"J + K {ref['build_s']:.1f} s measured; eigh projected",
            )
        )
        if "error" not in tj:
            rows.append(
                (
                    "",
                    "tutorial-jac",
                    "float64",
                    tj["wall"] + eigh_s(dim),
                    max(gib(tj), eigh_gib),
                    "",
                    f"kernel {tj['wall']:.1f} s measured; eigh projected",
                )
            )
        if "error" not in tv:
            rows.append(
                (
                    "",
                    "tutorial-vps",
                    "float64",
                    tv["wall"] + eigh_s(dim),
                    eigh_gib,
                    "",
                    f"kernel projected from {tv['block']} pairs in {tv['block_s']:.1f} s; eigh projected",
                )
            )
    e29, ref29, tj, tv = (r[t] for t in ("entk_p29", "reference_p29", "tutorial_jac_p29", "tutorial_vps_p29"))
    if "error" not in e29 and "error" not in ref29:
        err = max(max_rel(e29["vals"][k], ref29["vals"][k]) for k in e29["vals"])
        rows.append(
            (
                "MLP p=29 diag_mean ×3, top 200",
                "entk",
                "float64",
                e29["wall"],
                gib(e29),
                f"{err:.1e}",
                "measured",
            )
        )
        rows.append(
            (
                "",
                "reference",
                "float64",
                ref29["wall"],
                gib(ref29),
                "",
                "measured: " + ", ".join(f"{k} {v:.1f} s" for k, v in ref29["stages"].items()),
            )
        )
        s29 = mlp_sizes(29)
        if "error" not in tj:
            nbytes = 8 * (s29["n"] * s29["c"] * s29["P"] + (s29["n"] * s29["c"]) ** 2)
            rows.append(
                (
                    "",
                    "tutorial-jac (full only)",
                    "float64",
                    tj["wall"],
                    nbytes / GiB,
                    "",
                    f"J {tj['jac_s']:.1f} s measured; contraction projected from {tj['n0']} samples; memory J + NTK",
                )
            )
        if "error" not in tv:
            rows.append(
                (
                    "",
                    "tutorial-vps (full only)",
                    "float64",
                    tv["wall"],
                    float("nan"),
                    "",
                    f"projected from {tv['block']} pairs in {tv['block_s']:.1f} s",
                )
            )
        for p, itemsize in ((59, 8), (113, 4)):
            dtype, ep = ("float64" if itemsize == 8 else "float32"), r[f"entk_p{p}"]
            if "error" in ep:
                continue
            rows.append(
                (
                    f"MLP p={p} diag_mean ×3, top 200",
                    "entk",
                    dtype,
                    ep["wall"],
                    gib(ep),
                    "",
                    "measured",
                )
            )
            secs, nbytes = project_reference(ref29, p, itemsize)
            rows.append(
                (
                    "",
                    "reference",
                    dtype,
                    secs,
                    nbytes / GiB,
                    "",
                    "projected from p=29's stages",
                )
            )
    ef = r["entk_p113_flat"]
    if "error" not in ef:
        s = mlp_sizes(113)
        dim = s["n"] * s["c"]
        rows.append(
            (
                f"MLP p=113 flattened {dim:,}², top 50",
                "entk",
                "float32",
                ef["wall"],
                gib(ef),
                "",
                f"measured; {ef['products']} products on the {ef['side']} side",
            )
        )
        rows.append(
            (
                "",
                "reference",
                "float32",
                float("nan"),
                (dim**2 + dim * s["P"]) * 4 / GiB,
                "",
                "infeasible: dense K and J",
            )
        )

    print("\n## Results\n")
    print("| case | method | dtype | time | peak RSS | max rel. eigenvalue error | how |")
    print("|---|---|---|---:|---:|---:|---|")
    base = {}
    for case, method, dtype, secs, mem, err, how in rows:
        base = {"case": case, "secs": secs, "mem": mem} if method == "entk" else base
        ratio = f" ({secs / base['secs']:.0f}×)" if method != "entk" and np.isfinite(secs) else ""
        mem_s = (
            "—"
            if not np.isfinite(mem)
            else f"{mem:,.2f} GiB" + (f" ({mem / base['mem']:.0f}×)" if method != "entk" else "")
        )
        time_s = "—" if not np.isfinite(secs) else f"{secs:,.1f} s{ratio}"
        print(f"| {case} | {method} | {dtype} | {time_s} | {mem_s} | {err} | {how} |")
    print("\n(×): the baseline's time or memory over entk's on the same case. Peak RSS includes ≈ 0.2 GiB of torch.")
    if not any("error" in r[t] for t in ("entk_p113", "entk_p113_flat")):
        print(_arithmetic_limit(r["entk_p113"], r["entk_p113_flat"]))
    print(f"\nwhole benchmark {time.perf_counter() - started:.0f} s; load after {_loadavg()}")


def _arithmetic_limit(diag: dict, flat: dict) -> str:
    """Flops of the p = 113 work ÷ measured time; float32 GEMM peak of this machine for scale."""
    s = mlp_sizes(113)
    n, c, h, d = s["n"], s["c"], 512, 2 * 113
    # Layer 1: X Xᵀ and the per-unit Gram (compression rank 1); layer 2: its (N, hidden) factor's Gram.
    kernel_flops = 2 * n * n * (h + d) + 2 * n * h * h
    product = 2 * (2 * n * d * h + 4 * n * h * c)  # one Fᵀ F u: 2 one-hot-input GEMMs + 4 of the output layer
    flops = flat["products"] * product
    a = torch.randn(4096, 4096)
    a @ a
    t = time.perf_counter()
    a @ a
    peak = 2 * 4096**3 / (time.perf_counter() - t)
    # The block solver took ≈ 1000 kernel–vector products on each of the two dense kernels (full, layer 1).
    solver_flops = 2 * 1000 * 2 * n * n
    diag_flops = kernel_flops + solver_flops
    return (
        f"\narithmetic (p = 113, float32; float32 GEMM peak here {peak / 1e9:.0f} GFLOP/s):\n"
        f"- diag_mean ×3 top 200: kernels ≥ {kernel_flops / 1e9:.0f} GFLOP + block solver ≈ 2 kernels × 1000 "
        f"products × 2·N² = {solver_flops / 1e9:.0f} GFLOP in {diag['wall']:.1f} s = "
        f"{diag_flops / diag['wall'] / 1e9:.0f} GFLOP/s ({diag_flops / diag['wall'] / peak:.0%} of peak)\n"
        f"- flattened top 50: {flat['products']} products × {product / 1e9:.1f} GFLOP = {flops / 1e12:.2f} TFLOP "
        f"in {flat['wall']:.1f} s = {flops / flat['wall'] / 1e9:.0f} GFLOP/s "
        f"({flops / flat['wall'] / peak:.0%} of peak)"
    )


if __name__ == "__main__":
    main()
