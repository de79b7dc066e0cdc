"""Rule overlap_curve: cliff-2 overlap with the a+b and a−b families at every checkpoint (paper v4)."""

from entk import shared as wf
from entk.analyses.analysis import load_eigen
from entk.analyses.modadd import derivative_peak, grokking_epoch, overlap_curve

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    eig = load_eigen(sm.input.eigen)
    curve = overlap_curve(eig.steps, eig.vectors["full"], sm.params.p)
    history = wf.read_history(sm.input.history, sm.params.history_steps)
    curve["grok_epoch"] = grokking_epoch(history, sm.params.grok_threshold)
    curve["peak_epoch"] = derivative_peak(curve, "sum")
    print(curve.to_string(index=False))
    wf.save_csv(sm.output.csv, curve)
