"""Benchmark (not a test): where the time of the TMS case of gpu_bench.py goes on a GPU, per stage,
first call and warm call (run on a machine with CUDA)."""

import time

import torch

import entk
from entk.kinds.models import TMS, tms_data, tms_importance


def stages(device: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = tms_data(500, 50, 0.9, gen).double().to(device)
    model = TMS(50, 40, generator=gen).double().to(device)
    w = tms_importance(50, 0.8).to(device) ** 0.5
    for call in ("first", "warm"):
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        ntk = entk.NTK(model, x, outputs="flatten", output_weights=w)
        kernel = ntk.kernel()
        sync()
        t1 = time.perf_counter()
        _, _, info = ntk.eigenpairs(80, return_info=True)
        sync()
        t2 = time.perf_counter()
        print(
            f"{device} {call}: kernel {t1 - t0:.2f} s ({kernel.kind} {tuple(kernel.data.shape)}), "
            f"eigenpairs {t2 - t1:.2f} s by {info.method}"
        )


if __name__ == "__main__":
    stages("cuda")
    stages("cpu")
