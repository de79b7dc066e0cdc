"""Rule figure_2: spectra of the full, layer-1 and layer-2 eNTK after training (paper Figure 2)."""

import numpy as np

from entk import workflow as wf
from entk.plotting import figure_2
from entk.rotation import cliff_slices

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    spectra = {}
    for layer, path in zip(sm.params.layers, sm.input.eigen):
        with np.load(path) as data:
            spectra[layer.replace("layer", "layer ")] = data["eigenvalues"][-1]
    wf.save_figure(figure_2(spectra, cliff_slices(sm.params.p)), [sm.output.png, sm.output.pdf])
