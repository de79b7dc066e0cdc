"""Rule eigen: top-k eigenpairs of every layer group's eNTK at each checkpoint a view analyses,
in one eigen file (README, "The eigen file")."""

from entk import runner
from entk import workflow as wf

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    device = wf.resolve_device(sm.params.device)
    arrays = runner.eigen_file(sm.params.exp, sm.params.view, list(sm.input.checkpoints), sm.params.seed, device)
    wf.save_npz(sm.output.eigen, **arrays)
