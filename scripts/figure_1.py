"""Rule figure_1: TMS spectra and eigenvector–feature heatmaps (paper Figure 1)."""

from entk import workflow as wf
from entk.analysis import load_eigen
from entk.metrics import feature_indicator_map
from entk.plotting import figure_1
from entk.spectrum import cliff

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    tms, betas = sm.params.tms, [float(b) for b in sm.params.betas]
    paths = iter(sm.input.eigen)
    panels = []
    for exp in tms["experiments"]:
        spec = sm.params.settings[exp]
        panel = {"title": f"m = {spec['m']}, S = {spec['sparsity']:g}", "eigenvalues": {}, "cliffs": {}, "overlap": {}}
        next(paths)
        for beta in betas:
            eig = load_eigen(next(paths))
            vals = eig.values["full"][-1]
            panel["eigenvalues"][beta] = vals
            panel["cliffs"][beta] = cliff(vals)
            panel["overlap"][beta] = feature_indicator_map(eig.vectors["full"][-1], eig.inputs)
        panels.append(panel)
    wf.save_figure(figure_1(panels, betas), [sm.output.png, sm.output.pdf])
