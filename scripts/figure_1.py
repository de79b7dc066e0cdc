"""Rule figure_1: TMS spectra (un-rescaled, cliffs marked) and eigenvector–feature heatmaps per β (paper Figure 1)."""

from entk import shared as wf
from entk.analyses.analysis import load_eigen
from entk.analyses.metrics import feature_indicator_map
from entk.figures.plotting import figure_1

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    tms, betas = sm.params.tms, [float(b) for b in sm.params.betas]
    paths = iter(sm.input.eigen)
    panels = []
    for exp in tms["experiments"]:
        spec = sm.params.settings[exp]
        plain = load_eigen(next(paths))
        overlap = {}
        for beta in betas:
            eig = load_eigen(next(paths))
            overlap[beta] = feature_indicator_map(eig.vectors["full"][-1], eig.inputs)
        panels.append(
            {"m": spec["m"], "sparsity": spec["sparsity"], "eigenvalues": plain.values["full"][-1], "overlap": overlap}
        )
    wf.save_figure(figure_1(panels, betas, cliff_detector=sm.params.cliffs), [sm.output.png, sm.output.pdf])
