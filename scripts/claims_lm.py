"""Rule claims_lm: the Table-3 analogue (per class and block, eNTK vs PCA, and each method's best
block; the initialisation and random-direction controls beside them), and the claims rows of paper §4."""

import pandas as pd

from entk import shared as wf
from entk.analyses import lm_analysis
from entk.analyses.claims import format_scorecard, scorecard

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    classes = list(sm.params.classes)
    trained, init = pd.read_csv(sm.input.trained), pd.read_csv(sm.input.init)
    for frame in (trained, init):
        frame["layer"] = frame["layer"].astype("Int64")
    table = lm_analysis.table3(trained, init, classes)
    lanczos = pd.concat(
        [
            pd.read_csv(sm.input.lanczos_trained).assign(state="trained"),
            pd.read_csv(sm.input.lanczos_init).assign(state="init"),
        ]
    )
    claims = scorecard(lm_analysis.lm_claims(table, lanczos, classes))
    print(table.round(3).to_string(index=False))
    print(lanczos.round(4).to_string(index=False))
    print(format_scorecard(claims))
    wf.save_csv(sm.output.table, table)
    wf.save_csv(sm.output.lanczos, lanczos)
    wf.save_csv(sm.output.claims, claims)
