"""Rule seed_claims: every claims row of the paper's sections over the seed study's seeds
(results/paper/seed_claims.csv): the value at each seed, how many seeds pass, median and range."""

from collections import defaultdict

import pandas as pd

from entk import shared as wf
from entk.analyses.seeds import format_seed_table, seed_table

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    parts = defaultdict(list)
    for seed, path in zip(sm.params.seeds, sm.input, strict=True):
        parts[seed].append(pd.read_csv(path))
    table = seed_table({seed: pd.concat(tables, ignore_index=True) for seed, tables in parts.items()})
    print(format_seed_table(table))
    wf.save_csv(sm.output.csv, table)
