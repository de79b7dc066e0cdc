"""Concatenate CSV tables with the same columns into one (e.g. per-model metrics → summary)."""

import pandas as pd

from entk import shared as wf

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    table = pd.concat([pd.read_csv(p) for p in sm.input], ignore_index=True)
    print(table.to_string(index=False))
    wf.save_csv(sm.output.csv, table)
