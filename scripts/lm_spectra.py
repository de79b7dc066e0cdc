"""Rule lm_spectra: a language model's per-module eNTK over training (docs/spec.md §4): the top-k
spectrum of every module at every checkpoint, and the label-free phase detector (entk.analyses.analysis)
on each module's top eigenspace of the flattened eNTK (N·C rows), its k the deepest cliff of the
module's final spectrum."""

import numpy as np

from entk import shared as wf
from entk.analyses import analysis

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    modules, steps = list(sm.params.modules), list(sm.params.steps)
    values, vectors, names = {}, {}, {}
    paths = iter(sm.input.eigen)
    for module in modules:
        arrays = [np.load(next(paths)) for _ in steps]
        values[module] = np.stack([a["values"] for a in arrays])
        vectors[module] = np.stack([a["vectors"] for a in arrays])
        names[module] = [str(arrays[-1]["module"])]
        n, c = int(arrays[-1]["n_samples"]), int(arrays[-1]["n_outputs"])
    eig = analysis.EigenFile(
        np.asarray(steps, dtype=np.int64), modules, values, vectors, names, np.zeros((n, 0)), "flatten", c, n
    )
    experiment = sm.wildcards.experiment
    # k per module: the deepest cliff of its final spectrum; a module without a cliff among the top k
    # is followed through all of them rather than left out.
    ks = analysis.phase_k(eig)
    for module in modules:
        if module not in ks:
            ks[module] = values[module].shape[1]
            print(f"{module}: no cliff in its final top {ks[module]}; following all {ks[module]} modes")
    phases = analysis.phase_table(eig, ks)
    for module in phases["layer"].unique():
        print(f"{module}: label-free phase peak at step {analysis.phase_peak(phases, module)}")
    wf.save_csv(sm.output.spectra, analysis.spectra_table(eig, experiment, "lm"))
    wf.save_csv(sm.output.phases, phases)
