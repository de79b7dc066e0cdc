"""Rule figure_lm: per class, test AP of eNTK modes against PCA per block (docs/spec.md §4)."""

import pandas as pd

from entk import shared as wf
from entk.figures.lm_plots import detector_figure

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    trained, init = pd.read_csv(sm.input.trained), pd.read_csv(sm.input.init)
    fig = detector_figure(trained, init, list(sm.params.classes))
    wf.save_figure(fig, [sm.output.png, sm.output.pdf])
