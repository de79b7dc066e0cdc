"""Rule overlap_mlp: cliff-2 overlap with the a+b and a−b families at every checkpoint (paper v4)."""

import numpy as np
import pandas as pd

from entk import workflow as wf
from entk.modadd import derivative_peak, grokking_epoch, overlap_curve

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    with np.load(sm.input.full) as data:
        curve = overlap_curve(data["epochs"], data["eigenvectors"], sm.params.p)
    history = pd.read_csv(sm.input.history)
    curve["grok_epoch"] = grokking_epoch(history, sm.params.grok_threshold)
    curve["peak_epoch"] = derivative_peak(curve, "sum")
    print(curve.to_string(index=False))
    with wf.atomic_path(sm.output.csv) as tmp:
        curve.to_csv(tmp, index=False)
