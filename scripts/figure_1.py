"""Rule figure_1: TMS spectra and eigenvector–feature heatmaps (paper Figure 1)."""

import numpy as np

from entk import workflow as wf
from entk.metrics import feature_indicator_map
from entk.models import load_tms
from entk.plotting import figure_1

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    betas = sm.params.betas
    eigen_paths = iter(sm.input.eigen)
    panels = []
    for model_id, model_path in zip(sm.params.models, sm.input.models):
        _, x, _ = load_tms(model_path)
        spec = sm.params.specs[model_id]
        panel = {"title": f"m = {spec['m']}, S = {spec['sparsity']:g}", "eigenvalues": {}, "cliffs": {}, "overlap": {}}
        for beta in betas:
            with np.load(next(eigen_paths)) as eig:
                panel["eigenvalues"][float(beta)] = eig["eigenvalues"]
                panel["cliffs"][float(beta)] = int(eig["cliff"])
                panel["overlap"][float(beta)] = feature_indicator_map(eig["eigenvectors"], x.double().numpy())
        panels.append(panel)
    fig = figure_1(panels, [float(b) for b in betas])
    wf.save_figure(fig, [sm.output.png, sm.output.pdf])
