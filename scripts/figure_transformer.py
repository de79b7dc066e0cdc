"""Rules figure_transformer / figure_transformer_layers: the grokking diagnostic (accuracy, W_U
overlap with the key-frequency sum family and its derivative) and the Table-2 heatmap."""

import pandas as pd

from entk import shared as wf
from entk.figures.transformer_plots import fig_transformer, fig_transformer_layers

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    if "layers" in sm.input.keys():
        keys = [int(k) for k in pd.read_csv(sm.input.frequencies, dtype={"keys": str})["keys"].iloc[0].split()]
        fig = fig_transformer_layers(pd.read_csv(sm.input.layers), keys)
    else:
        curve = pd.read_csv(sm.input.curve)
        grok = curve["grok_epoch"].iloc[0]
        fig = fig_transformer(
            wf.read_history(sm.input.history, sm.params.history_steps),
            curve,
            peak=int(curve["peak_epoch"].iloc[0]),
            grok=None if pd.isna(grok) else int(grok),
            threshold=sm.params.grok_threshold,
            n_top=int(curve["of"].iloc[0]) + 1,
        )
    wf.save_figure(fig, [sm.output.png, sm.output.pdf])
