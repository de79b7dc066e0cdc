"""Rule claims_scale: cliff sizes, gap and family overlaps of the p = 113 run (results/scale/claims.csv)."""

import numpy as np

from entk import workflow as wf
from entk.claims import format_scorecard, scorecard, spectrum_claims

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    with np.load(sm.input.layer1) as l1, np.load(sm.input.full) as full:
        rows = spectrum_claims(
            sm.params.p,
            l1["eigenvalues"][-1],
            l1["eigenvectors"][-1],
            full["eigenvalues"][-1],
            full["eigenvectors"][-1],
            sm.params.claims,
            prefix=f"p = {sm.params.p}: ",
        )
    table = scorecard(rows)
    print(format_scorecard(table))
    with wf.atomic_path(sm.output.csv) as tmp:
        table.to_csv(tmp, index=False)
