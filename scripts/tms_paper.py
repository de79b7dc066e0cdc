"""Rule tms_paper: per TMS model, the spectrum's cliff, feature recovery per β and the sanity
count (results/paper/tms_metrics.csv), and the TMS rows of the claims scorecard (paper §1)."""

import numpy as np
import pandas as pd

from entk import workflow as wf
from entk.analysis import load_eigen
from entk.claims import format_scorecard, scorecard, tms_claims
from entk.metrics import feature_indicator_map, matched_overlap, recovered_features, represented_features
from entk.spectrum import cliff

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    tms = sm.params.tms
    views = [tms["spectrum_view"], *tms["heatmap_views"]]
    betas = [None, *sm.params.betas]
    paths = iter(sm.input.eigen)
    rows = []
    for exp in tms["experiments"]:
        for view, beta in zip(views, betas, strict=True):
            path = next(paths)
            eig = load_eigen(path)
            with np.load(path) as data:
                w = data["weights/W"]
            vals, vecs = eig.values["full"][-1], eig.vectors["full"][-1]
            overlap = feature_indicator_map(vecs, eig.inputs)
            n = eig.inputs.shape[1]
            rows.append(
                {
                    "model": exp,
                    "view": view,
                    "beta": beta,
                    "cliff": cliff(vals),
                    "recovered_features": recovered_features(overlap, top=n),
                    "matched_overlap": matched_overlap(overlap, top=n),
                    "represented_features": represented_features(w),
                }
            )
    metrics = pd.DataFrame(rows)
    print(metrics.to_string(index=False))
    table = scorecard(tms_claims(metrics, sm.params.claims))
    print(format_scorecard(table))
    for frame, out in ((metrics, sm.output.metrics), (table, sm.output.claims)):
        with wf.atomic_path(out) as tmp:
            frame.to_csv(tmp, index=False)
