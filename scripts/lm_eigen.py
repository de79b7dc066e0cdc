"""Rule lm_eigen: one module's eNTK of the final normed hidden state with the output metric
(docs/spec.md §4): top k by the converged solver and by the author's Lanczos, their overlap, time
and memory."""

import numpy as np
import torch

from entk import lm
from entk import shared as wf
from entk.pipeline import lm_views

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    s = sm.params.lm
    device = wf.resolve_device(sm.params.device)
    model = lm.load_causal_lm(sm.params.model_dir, dtype=getattr(torch, sm.params.lm["dtype"])).to(device)
    with np.load(sm.input.contexts) as data:
        ids = torch.from_numpy(data["ids"]).to(device)
    metric = lm_views.output_metric(model, s["output_metric"]).to(device)
    jacobian = lm_views.load_jacobian(sm.input.jacobians, sm.wildcards.module, like=metric.to(model.dtype))
    arrays = lm_views.module_eigen(
        model,
        ids,
        sm.wildcards.module,
        metric,
        position=s["position"],
        top_k=s["top_k"],
        lanczos_steps=s["lanczos_steps"],
        max_memory_gb=s.get("max_memory_gb") or sm.params.max_memory_gb,
        jacobian=jacobian,
    )
    wf.save_npz(sm.output.eigen, **arrays)
