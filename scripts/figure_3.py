"""Rule figure_3: grokking curves and full-eNTK spectra across training (paper Figure 3)."""

from entk import shared as wf
from entk.analyses.analysis import load_eigen
from entk.analyses.modadd import grokking_epoch
from entk.analyses.rotation import cliff_slices
from entk.figures.plotting import figure_3

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    history = wf.read_history(sm.input.history, sm.params.history_steps)
    eig = load_eigen(sm.input.eigen)
    spectra = {e: eig.values["full"][eig.index(e)] for e in sm.params.epochs}
    grok = grokking_epoch(history, sm.params.grok_threshold)
    fig = figure_3(history, spectra, grok, cliff_slices(sm.params.p))
    wf.save_figure(fig, [sm.output.png, sm.output.pdf])
