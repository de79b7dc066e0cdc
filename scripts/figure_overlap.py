"""Rule figure_overlap: cliff-2 overlap with the sum/diff families and its derivative (paper v4)."""

import pandas as pd

from entk import shared as wf
from entk.figures.plotting import figure_overlap

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    curve = pd.read_csv(sm.input.overlap)
    grok = curve["grok_epoch"].iloc[0]
    fig = figure_overlap(
        curve["epoch"].to_numpy(),
        {v: curve[f"overlap_{v}"].to_numpy() for v in ("sum", "diff")},
        {v: curve[f"d_{v}"].to_numpy() for v in ("sum", "diff")},
        sm.params.p - 1,
        None if pd.isna(grok) else int(grok),
        int(curve["peak_epoch"].iloc[0]),
    )
    wf.save_figure(fig, [sm.output.png, sm.output.pdf])
