"""Rule smooth_rotation: two-stage smoothness rotation of cliff 1 (layer 1, final epoch) and of
cliff 2 (full kernel, Figure 5 epochs), scored against the Fourier families."""

import numpy as np

from entk import shared as wf
from entk.analyses.analysis import load_eigen
from entk.analyses.modadd import cliff1_maps, cliff2_maps

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    p = sm.params.p
    eig = load_eigen(sm.input.eigen)
    out = cliff1_maps(eig.vectors["layer1"][-1], p)
    for epoch in sm.params.fig5_epochs:
        for family, corr in cliff2_maps(eig.vectors["full"][eig.index(epoch)], p).items():
            out[f"{family}_{epoch}"] = corr
        print(f"epoch {epoch}: rotated cliff 2")
    wf.save_npz(sm.output.rotation, fig5_epochs=np.asarray(sm.params.fig5_epochs), **out)
