"""Rule claims_tms: per TMS model, the un-rescaled spectrum's gap and cliffs, feature recovery per β
and the sanity count (results/paper/tms_metrics.csv), and the TMS rows of the claims scorecard (paper §1)."""

import numpy as np
import pandas as pd

from entk import shared as wf
from entk.analyses.analysis import load_eigen
from entk.analyses.claims import format_scorecard, scorecard, tms_model_claims
from entk.analyses.metrics import feature_indicator_map, matched_overlap, recovered_features, represented_features
from entk.analyses.spectrum import find_cliffs

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    tms, betas = sm.params.tms, [float(b) for b in sm.params.betas]
    bands = {**sm.params.claims, "cliff_detector": sm.params.cliffs}
    paths = iter(sm.input.eigen)
    metrics, rows = [], []
    for exp in tms["experiments"]:
        plain = load_eigen(next(paths))
        w = plain.weights["W"]
        values, x = plain.values["full"][-1], plain.inputs
        n = x.shape[1]
        vectors = {beta: load_eigen(next(paths)).vectors["full"][-1] for beta in betas}
        cliffs = find_cliffs(values, **sm.params.cliffs)
        for beta, v in vectors.items():
            overlap = feature_indicator_map(v, x)
            metrics.append(
                {
                    "model": exp,
                    "beta": beta,
                    "gap_ratio_n": float(values[n - 1] / values[n]) if len(values) > n else np.nan,
                    "cliffs": " ".join(str(c.position) for c in cliffs),
                    "recovered_features": recovered_features(overlap, top=v.shape[1]),
                    "matched_overlap": matched_overlap(overlap, top=n),
                    "represented_features": represented_features(w),
                }
            )
        rows += tms_model_claims(exp, values, vectors, x, w, bands)
    metrics = pd.DataFrame(metrics)
    print(metrics.to_string(index=False))
    table = scorecard(rows)
    print(format_scorecard(table))
    for frame, out in ((metrics, sm.output.metrics), (table, sm.output.claims)):
        wf.save_csv(out, frame)
