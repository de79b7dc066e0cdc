"""Rule claims_scale: cliff sizes, gap and family overlaps of the p = 113 run (results/paper/scale_claims.csv)."""

from entk import shared as wf
from entk.analyses.analysis import load_eigen
from entk.analyses.claims import format_scorecard, scorecard, spectrum_claims

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    eig = load_eigen(sm.input.eigen)
    rows = spectrum_claims(
        sm.params.p,
        eig.values["layer1"][-1],
        eig.vectors["layer1"][-1],
        eig.values["full"][-1],
        eig.vectors["full"][-1],
        sm.params.claims,
        prefix=f"p = {sm.params.p}: ",
    )
    table = scorecard(rows)
    print(format_scorecard(table))
    wf.save_csv(sm.output.csv, table)
