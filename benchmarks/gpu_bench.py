"""Benchmark (not a test): entk's heavy cases on a CUDA GPU against the same calls on the CPU of the
same machine, in one process, with the eigenvalues compared.

Cases (the sizes of benchmarks/entk_bench.py):

- TMS at the paper's size (N = 500, C = 50: a 25000² flattened kernel), top 80, float64;
- modular-addition MLP at p = 113 (hidden 512): the two layer diag_mean kernels and their sum,
  top 200 each, float32;
- the same MLP's flattened eNTK (C·N = 1.44 M rows), top 50, matrix-free, float32.

The models are at their random initialisation (the workflow's trained weights are not needed to
time the arithmetic; the flattened solver's product count depends on the spectrum, so it is
printed). Run from the repository root on a machine with a GPU:

    python benchmarks/gpu_bench.py [--cpu-threads 16] [--skip-cpu-flat]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import torch

import entk
from entk.kinds.models import TMS, ModMLP, modadd_inputs, tms_data, tms_importance


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def tms_case(device: torch.device):
    gen = torch.Generator().manual_seed(0)
    x = tms_data(500, 50, 0.9, gen)
    model = TMS(50, 40, generator=gen).double().to(device)
    weights = tms_importance(50, 0.8).to(device) ** 0.5
    vals, _ = entk.NTK(model, x.double().to(device), outputs="flatten", output_weights=weights).eigenpairs(80)
    return vals


def mlp_layers_case(device: torch.device):
    model = ModMLP(113, 512, torch.Generator().manual_seed(0)).to(device)
    x = modadd_inputs(113).to(device)
    ntk = entk.NTK(model, x, groups={"layer1": ["fc1"], "layer2": ["fc2"]}, outputs="diag_mean")
    return torch.cat([ntk.eigenpairs(200, group)[0] for group in (None, "layer1", "layer2")])


def mlp_flat_case(device: torch.device):
    model = ModMLP(113, 512, torch.Generator().manual_seed(0)).to(device)
    ntk = entk.NTK(model, modadd_inputs(113).to(device), outputs="flatten")
    vals, _, info = ntk.eigenpairs(50, return_info=True)
    print(f"    solver: {info}")
    return vals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-cpu-flat", action="store_true", help="skip the CPU run of the flattened case")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench needs a CUDA GPU")
    torch.set_num_threads(args.cpu_threads)
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    print(f"# entk GPU benchmark, {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"gpu {torch.cuda.get_device_name()}; torch {torch.__version__}; cpu threads {torch.get_num_threads()}")
    mlp_layers_case(gpu)  # CUDA context, cuBLAS/cuSOLVER handles: not part of any timing
    print("| case | GPU s | GPU peak GiB | CPU s | CPU/GPU | max rel. eigenvalue diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, case in (
        ("TMS 25000² top 80 f64", tms_case),
        ("MLP p=113 3×diag_mean top 200 f32", mlp_layers_case),
        ("MLP p=113 flattened top 50 f32", mlp_flat_case),
    ):
        v_gpu, t_gpu = _timed(lambda case=case: case(gpu), gpu)
        peak = torch.cuda.max_memory_allocated() / 2**30
        if case is mlp_flat_case and args.skip_cpu_flat:
            print(f"| {name} | {t_gpu:.2f} | {peak:.2f} | – | – | – |")
            continue
        v_cpu, t_cpu = _timed(lambda case=case: case(cpu), cpu)
        err = ((v_gpu.cpu().double() - v_cpu.double()).abs() / v_cpu.double().abs().clamp_min(1e-30)).max().item()
        print(f"| {name} | {t_gpu:.2f} | {peak:.2f} | {t_cpu:.2f} | {t_cpu / t_gpu:.1f}× | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
