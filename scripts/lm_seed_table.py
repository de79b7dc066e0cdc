"""Rule lm_seed_table: per training seed and context draw, each method's best block, its macro test
AP, and the paired difference eNTK − PCA (docs/spec.md §4)."""

import pandas as pd

from entk import shared as wf
from entk.analyses import lm_analysis

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    rows = []
    for (experiment, draw), path in zip(sm.params.runs, sm.input.detectors, strict=True):
        table = pd.read_csv(path)
        table["layer"] = table["layer"].astype("Int64")
        rows.append(lm_analysis.seed_row(table, experiment, draw))
    seeds = pd.DataFrame(rows)
    print(seeds.round(4).to_string(index=False))
    d = seeds["difference"]
    print(
        f"eNTK − PCA macro AP: mean {d.mean():.4f}, sd {d.std(ddof=1) if len(d) > 1 else 0:.4f}, "
        f"positive in {(d > 0).sum()} of {len(d)}"
    )
    wf.save_csv(sm.output.csv, seeds)
