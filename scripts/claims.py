"""Rule claims: the scorecard of the paper's quantitative claims (results/claims.csv)."""

import numpy as np
import pandas as pd

from entk import workflow as wf
from entk.claims import format_scorecard, modadd_claims, scorecard, tms_claims

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    with np.load(sm.input.layer1) as l1, np.load(sm.input.full) as full, np.load(sm.input.rotation) as rot:
        rows = modadd_claims(
            sm.params.p,
            l1["eigenvalues"][-1],
            l1["eigenvectors"][-1],
            full["eigenvalues"][-1],
            full["eigenvectors"][-1],
            pd.read_csv(sm.input.history),
            pd.read_csv(sm.input.overlap),
            {k: rot[k] for k in ("rot_a", "rot_b")},
            sm.params.claims,
            sm.params.grok_threshold,
        )
    rows += tms_claims(pd.read_csv(sm.input.tms), sm.params.claims)
    table = scorecard(rows)
    print(format_scorecard(table))
    with wf.atomic_path(sm.output.csv) as tmp:
        table.to_csv(tmp, index=False)
