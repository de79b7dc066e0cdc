"""Rule eigen: top-k eigenpairs of every layer group's eNTK at each checkpoint a view analyses,
in one eigen file (README, "The eigen file"). The model, the probe inputs and the view are checked
first (entk.pipeline.preflight): for checkpoints of the user's own, this is the experiment's first job."""

from entk import shared as wf
from entk.pipeline import preflight, runner
from entk.pipeline.experiments import Experiment, View

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    device = wf.resolve_device(sm.params.device)
    exp, view = Experiment.from_params(sm.params.exp), View(**sm.params.view)
    preflight.check_experiment(exp, [view], device)
    runner.eigen_file(exp, view, list(sm.input.checkpoints), device).save(sm.output.eigen)
