"""Rule eigen_mlp: top-k eigenpairs of one MLP kernel at every checkpoint."""

import time

import numpy as np
import torch

import entk
from entk import workflow as wf

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    device, k = wf.resolve_device(sm.params.device), sm.params.top_k
    with np.load(sm.input.kernels) as data:
        kernels, epochs, n_outputs = data["kernels"], data["epochs"], int(data["n_outputs"])
    n_epochs, n = kernels.shape[:2]
    values, vectors = np.empty((n_epochs, k)), np.empty((n_epochs, n, k))
    start = time.perf_counter()
    for i, epoch in enumerate(epochs):
        kernel = entk.Kernel("dense", torch.from_numpy(kernels[i]).to(device), n, n_outputs, "diag_mean")
        vals, vecs = entk.kernel_eigenpairs(kernel, k)
        values[i], vectors[i] = vals.cpu().numpy(), vecs.cpu().numpy()
        print(f"epoch {epoch}: λ1 = {values[i, 0]:.4g}, λ{k} = {values[i, -1]:.3g} ({time.perf_counter() - start:.1f} s)")
    wf.save_npz(sm.output.eigen, eigenvalues=values, eigenvectors=vectors, epochs=epochs)
