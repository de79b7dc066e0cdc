"""Rule kernel_mlp: layerwise diag_mean eNTKs on all p² inputs at every checkpoint, and the full
one as their sum (paper §2); one forward and backward pass per checkpoint serves every layer."""

import time

import numpy as np
import torch

import entk
from entk import workflow as wf
from entk.models import ModMLP, modadd_inputs

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    device, dtype = wf.resolve_device(sm.params.device), wf.torch_dtype(sm.params.dtype)
    x = modadd_inputs(sm.params.p).to(device, dtype)
    model = ModMLP(sm.params.p, sm.params.hidden).to(device, dtype)
    names = ["full", *sm.params.layers]
    kernels = {name: np.empty((len(sm.params.epochs), x.shape[0], x.shape[0])) for name in names}
    start = time.perf_counter()
    for i, (epoch, path) in enumerate(zip(sm.params.epochs, sm.input.checkpoints)):
        model.load_state_dict(torch.load(path, map_location=device)["model"])
        # paper §2: outputs reduced by the mean of the diagonal output blocks.
        layers = entk.layer_ntks(model, x, sm.params.layers, outputs="diag_mean")
        for name, kernel in layers.items():
            kernels[name][i] = kernel.dense().cpu().numpy()
        kernels["full"][i] = sum(kernels[name][i] for name in layers)
        print(f"epoch {epoch}: {len(layers)} layer kernels {x.shape[0]}² ({time.perf_counter() - start:.1f} s so far)")
    for name, path in zip(names, sm.output.kernels):
        wf.save_npz(path, kernels=kernels[name], epochs=np.asarray(sm.params.epochs), n_outputs=sm.params.p)
