"""Rules figure_2 / figure_scale: spectra of the full, layer-1 and layer-2 eNTK after training (paper Figure 2)."""

from entk import shared as wf
from entk.analyses.analysis import load_eigen
from entk.analyses.rotation import cliff_slices
from entk.figures.plotting import figure_2

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    eig = load_eigen(sm.input.eigen)
    spectra = {layer.replace("layer", "layer "): eig.values[layer][-1] for layer in ("full", "layer1", "layer2")}
    wf.save_figure(figure_2(spectra, cliff_slices(sm.params.p)), [sm.output.png, sm.output.pdf])
