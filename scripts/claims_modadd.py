"""Rule claims_modadd: the modular-addition rows of the claims scorecard (paper §2), and the
label-free phase detector's peak against the grokking epoch."""

import numpy as np
import pandas as pd

from entk import shared as wf
from entk.analyses.analysis import load_eigen
from entk.analyses.claims import format_scorecard, modadd_claims, phase_claims, scorecard

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    eig = load_eigen(sm.input.eigen)
    history = wf.read_history(sm.input.history, sm.params.history_steps)
    with np.load(sm.input.rotation) as rot:
        rotated = {k: rot[k] for k in ("rot_a", "rot_b")}
    rows = modadd_claims(
        sm.params.p,
        eig.values["layer1"][-1],
        eig.vectors["layer1"][-1],
        eig.values["full"][-1],
        eig.vectors["full"][-1],
        history,
        pd.read_csv(sm.input.overlap),
        rotated,
        sm.params.claims,
        sm.params.grok_threshold,
    )
    rows += phase_claims(pd.read_csv(sm.input.phases), history, sm.params.claims, sm.params.grok_threshold)
    table = scorecard(rows)
    print(format_scorecard(table))
    wf.save_csv(sm.output.csv, table)
