"""Rule rotate_mlp: two-stage smoothness rotation of cliff 1 (layer 1, final epoch) and of
cliff 2 (full kernel, Figure 5 epochs), scored against the Fourier families."""

import numpy as np

from entk import workflow as wf
from entk.modadd import cliff1_maps, cliff2_maps

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    p = sm.params.p
    out = {}
    with np.load(sm.input.layer1) as data:
        final = list(data["epochs"]).index(sm.params.final_epoch)
        out.update(cliff1_maps(data["eigenvectors"][final], p))
    with np.load(sm.input.full) as data:
        epochs = list(data["epochs"])
        for epoch in sm.params.fig5_epochs:
            for family, corr in cliff2_maps(data["eigenvectors"][epochs.index(epoch)], p).items():
                out[f"{family}_{epoch}"] = corr
            print(f"epoch {epoch}: rotated cliff 2")
    wf.save_npz(sm.output.rotation, fig5_epochs=np.asarray(sm.params.fig5_epochs), **out)
