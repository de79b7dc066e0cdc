"""Rule figure_seeds: the Transformer's grokking epoch per seed beside the author's, and the W_U
overlap curves of all seeds aligned on their grokking epochs."""

import pandas as pd

from entk import shared as wf
from entk.figures.seed_plots import fig_seeds

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    seeds = sm.params.seeds
    runs = zip(seeds, sm.input.histories, sm.params.steps, strict=True)
    histories = {s: wf.read_history(h, steps) for s, h, steps in runs}
    curves = {s: pd.read_csv(c) for s, c in zip(seeds, sm.input.curves, strict=True)}
    fig = fig_seeds(histories, curves, sm.params.grok_threshold)
    wf.save_figure(fig, [sm.output.png, sm.output.pdf])
