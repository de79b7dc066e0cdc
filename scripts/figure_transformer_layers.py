"""Rule figure_transformer_layers: the Table-2 heatmap (per layer group, the overlap of its top eNTK
modes with the key frequencies' Fourier families)."""

import pandas as pd

from entk import shared as wf
from entk.figures.transformer_plots import fig_transformer_layers

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    keys = [int(k) for k in pd.read_csv(sm.input.frequencies, dtype={"keys": str})["keys"].iloc[0].split()]
    wf.save_figure(fig_transformer_layers(pd.read_csv(sm.input.layers), keys), [sm.output.png, sm.output.pdf])
