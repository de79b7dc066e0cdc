"""Rule eigen_scale_flat: top eigenvalues of the flattened eNTK at p = 113 (C·N = 1.44 M rows),
which fits in memory neither as a kernel nor as a Jacobian: computed matrix-free."""

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
    model.load_state_dict(torch.load(sm.input.checkpoint, map_location=device)["model"])
    x = modadd_inputs(sm.params.p).to(device)
    start = time.perf_counter()
    vals, _ = entk.top_eigenpairs(model, x, k, outputs="flatten", max_memory_gb=budget)
    print(f"flattened eNTK: top {k} eigenvalues in {time.perf_counter() - start:.1f} s")
    print(np.array2string(vals.cpu().numpy(), precision=4))
    wf.save_npz(sm.output.eigen, eigenvalues=vals.double().cpu().numpy())
