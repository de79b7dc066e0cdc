"""Rule eigen_tms: top-k eigenpairs of the importance-rescaled flattened eNTK at one β, and the
TMS metrics they give (cliff, feature recovery, sanity count)."""

import time

import numpy as np
import pandas as pd

import entk
from entk import workflow as wf
from entk.metrics import feature_indicator_map, matched_overlap, recovered_features, represented_features
from entk.models import load_tms

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    device = wf.resolve_device(sm.params.device)
    beta, k = sm.params.beta, sm.params.top_k
    model, x, importance = load_tms(sm.input.model)
    with np.load(sm.input.kernel) as data:
        kernel = entk.Kernel.from_numpy_dict(data).to(device)
    start = time.perf_counter()
    # K_β = D^(β/2) J Jᵀ D^(β/2), D = diag(I) (paper §1).
    vals, vecs = entk.kernel_eigenpairs(kernel.scale_outputs(importance ** (beta / 2)), k)
    vals, vecs = vals.cpu().numpy(), vecs.cpu().numpy()
    position = entk.cliff(vals)
    print(f"β={beta:g}: top {k} eigenpairs in {time.perf_counter() - start:.2f} s; cliff after {position}")
    overlap = feature_indicator_map(vecs, x.double().numpy())
    n = x.shape[1]
    metrics = pd.DataFrame(
        [
            {
                "model": sm.wildcards.model,
                "m": sm.params.spec["m"],
                "sparsity": sm.params.spec["sparsity"],
                "layer": sm.wildcards.layer,
                "beta": beta,
                "cliff": position,
                "recovered_features": recovered_features(overlap, top=n),
                "matched_overlap": matched_overlap(overlap, top=n),
                "represented_features": represented_features(model.W.detach().double().numpy()),
            }
        ]
    )
    print(metrics.to_string(index=False))
    wf.save_npz(sm.output.eigen, eigenvalues=vals, eigenvectors=vecs, beta=beta, cliff=position)
    with wf.atomic_path(sm.output.metrics) as tmp:
        metrics.to_csv(tmp, index=False)
