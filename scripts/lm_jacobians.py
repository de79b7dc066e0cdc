"""Rule lm_jacobians: the downstream Jacobians D̃ of every module analysed at one state, from one chain of
reverse passes that their shared downstream network takes once (docs/spec.md §4); the eigen jobs read them."""

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
    model = lm.load_causal_lm(sm.params.model_dir, dtype=getattr(torch, s["dtype"])).to(device)
    with np.load(sm.input.contexts) as data:
        ids = torch.from_numpy(data["ids"]).to(device)
    lm_views.store_jacobians(
        model,
        ids,
        sm.params.modules,
        lm_views.output_metric(model, s["output_metric"]).to(device),
        sm.output.jacobians,
        position=s["position"],
        max_memory_gb=s.get("max_memory_gb") or sm.params.max_memory_gb,
    )
