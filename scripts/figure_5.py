"""Rule figure_5: rotated cliff 2 of the full eNTK against the a+b and a−b families per epoch."""

import numpy as np

from entk import shared as wf
from entk.figures.plotting import figure_5

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    with np.load(sm.input.rotation) as rot:
        maps = {e: {v: rot[f"{v}_{e}"] for v in ("sum", "diff")} for e in sm.params.epochs}
    wf.save_figure(figure_5(maps), [sm.output.png, sm.output.pdf])
