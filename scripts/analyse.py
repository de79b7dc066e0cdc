"""Rule analyse: the generic analyses of one experiment × view — spectra, cliffs, layer
localisation, label-free phase detection, candidate-feature overlaps, detectors of labels — as
tables and figures."""

import matplotlib

matplotlib.use("Agg")

from functools import partial

import numpy as np
import pandas as pd

from entk import shared as wf
from entk.analyses import analysis
from entk.analyses.detectors import DETECTOR_COLUMNS, view_detectors
from entk.analyses.spectrum import find_cliffs
from entk.figures import experiment_plots as plots

sm = snakemake  # noqa: F821 (injected by Snakemake)


with wf.logged(sm.log[0]):
    eig = analysis.load_eigen(sm.input.eigen)
    exp, view = sm.params.experiment, sm.params.view
    rule = partial(find_cliffs, **sm.params.cliffs)
    spectra = analysis.spectra_table(eig, exp, view)
    cliffs = analysis.cliffs_table(eig, exp, view, find_cliffs=rule)
    localisation = analysis.localisation_table(eig, find_cliffs=rule)
    if len(eig.steps) > 1:
        phases = analysis.phase_table(eig, find_cliffs=rule)
        peaks = {g: analysis.phase_peak(phases, g) for g in phases["layer"].unique()}
        phases["peak"] = [peaks[g] == s for g, s in zip(phases["layer"], phases["step"], strict=True)]
        print("label-free phase detector peaks:", peaks)
    else:
        phases = pd.DataFrame(
            columns=[
                "step",
                "layer",
                "k",
                "overlap_next",
                "overlap_final",
                "d_overlap_final",
                "spectrum_change",
                "peak",
            ]
        )
        print("one checkpoint: no phase detection")
    detectors = pd.DataFrame(columns=["group", *DETECTOR_COLUMNS])
    if "features" in sm.input.keys():
        features = np.load(sm.input.features, allow_pickle=False)
        overlaps = analysis.feature_overlap_table(eig, features, find_cliffs=rule)
        if features.ndim == 1:
            # Labels: the author's detectors (docs/spec.md §4) from the last checkpoint's eigenvectors.
            last = {g: eig.vectors[g][-1] for g in eig.groups}
            detectors = view_detectors(last, features, eig.n_samples)
            print(detectors.to_string(index=False))
    else:
        overlaps = pd.DataFrame(columns=["step", "layer", "cliff", "first", "position", "feature", "overlap", "dim"])
    print(cliffs[cliffs["step"] == eig.steps[-1]].to_string(index=False))
    for table, path in (
        (spectra, sm.output.spectra),
        (cliffs, sm.output.cliffs),
        (localisation, sm.output.localisation),
        (phases, sm.output.phases),
        (overlaps, sm.output.features),
        (detectors, sm.output.detectors),
    ):
        wf.save_csv(path, table)
    full = analysis.full_group(eig) or eig.groups[0]
    wf.save_figure(plots.plot_spectra(eig, cliffs=cliffs), [sm.output.fig_spectra])
    wf.save_figure(plots.plot_spectrum_over_checkpoints(eig, full, cliffs=cliffs), [sm.output.fig_checkpoints])
    if len(phases):
        fig = plots.plot_phases(phases)
    else:
        fig = plots.single_checkpoint_note(eig)
    wf.save_figure(fig, [sm.output.fig_phases])
