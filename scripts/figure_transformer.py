"""Rule figure_transformer: the grokking diagnostic (accuracy, W_U overlap with the key-frequency sum
family and its derivative)."""

import pandas as pd

from entk import shared as wf
from entk.figures.transformer_plots import fig_transformer

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
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
