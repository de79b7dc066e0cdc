"""Rule figure_4: cliff 1 of the layer-1 eNTK, raw vs rotated, against the a and b families."""

import numpy as np

from entk import shared as wf
from entk.figures.plotting import figure_4

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    with np.load(sm.input.rotation) as rot:
        raw = {v: rot[f"raw_{v}"] for v in ("a", "b")}
        rotated = {v: rot[f"rot_{v}"] for v in ("a", "b")}
    wf.save_figure(figure_4(raw, rotated), [sm.output.png, sm.output.pdf])
