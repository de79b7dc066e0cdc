"""Rule claims: the paper sections' claims rows in one scorecard (results/claims.csv), each row with
the seed it was measured at."""

import pandas as pd

from entk import shared as wf
from entk.analyses.claims import format_scorecard
from entk.analyses.seeds import with_seed_column

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    seeds = [sm.params.seeds[part] for part in sm.params.parts]
    table = with_seed_column([pd.read_csv(p) for p in sm.input], seeds)
    print(format_scorecard(table))
    wf.save_csv(sm.output.csv, table)
