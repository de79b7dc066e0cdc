"""Rule eigen_scale: top-k eigenpairs of the layerwise and full diag_mean eNTK at p = 113.

The kernels (N = p² = 12769, 0.65 GB each in float32) are built with the structured path and
not stored: only their eigenpairs are."""

import time

import numpy as np
import torch

import entk
from entk import workflow as wf
from entk.models import ModMLP, modadd_inputs

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    device, budget, k = wf.resolve_device(sm.params.device), sm.params.max_memory_gb, sm.params.top_k
    model = ModMLP(sm.params.p, sm.params.hidden).to(device)
    state = torch.load(sm.input.checkpoint, map_location=device)
    model.load_state_dict(state["model"])
    x = modadd_inputs(sm.params.p).to(device)
    start = time.perf_counter()
    layers = entk.layer_ntks(model, x, sm.params.layers, outputs="diag_mean", max_memory_gb=budget)
    print(f"epoch {state['epoch']}: layer kernels in {time.perf_counter() - start:.1f} s")
    kernels = {"full": layers["layer1"] + layers["layer2"], **layers}
    for name, path in zip(["full", "layer1", "layer2"], sm.output.eigen):
        start = time.perf_counter()
        vals, vecs = entk.kernel_eigenpairs(kernels.pop(name), k, max_memory_gb=budget)
        print(f"{name}: top {k} eigenpairs in {time.perf_counter() - start:.1f} s")
        wf.save_npz(
            path,
            eigenvalues=vals.double().cpu().numpy()[None],
            eigenvectors=vecs.double().cpu().numpy()[None],
            epochs=np.asarray([state["epoch"]]),
        )
