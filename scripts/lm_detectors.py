"""Rule lm_detectors: the detectors of one state of a language model (docs/spec.md §4): eNTK modes
of every module (both solvers), PCA of every block's output and the random-direction controls, as a
tidy table; and the converged-vs-Lanczos table of its modules."""

import numpy as np

from entk import shared as wf
from entk.analyses import lm_analysis

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    s = sm.params.lm
    with np.load(sm.input.contexts) as data:
        labels, classes = data["labels"], [str(c) for c in data["classes"]]
    with np.load(sm.input.hidden) as data:
        hidden = data["hidden"]
    modes = {}
    for module, path in zip(sm.params.modules, sm.input.eigen, strict=True):
        with np.load(path) as data:
            modes[module] = {k: data[k] for k in data.files if k != "module"}
    table = lm_analysis.detector_table(labels, classes, modes, hidden, s)
    table.insert(0, "state", sm.wildcards.state)
    summary = lm_analysis.macro(table)
    print(summary.round(3).to_string(index=False))
    wf.save_csv(sm.output.detectors, table)
    wf.save_csv(sm.output.lanczos, lm_analysis.lanczos_table(modes))
