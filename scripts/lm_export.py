"""Rule lm_export: every checkpoint of a language-model experiment as a Hugging Face checkpoint
directory (model and tokenizer, ``save_pretrained``): results/<experiment>/hf/step_<t>/."""

import shutil
from pathlib import Path

from entk import shared as wf
from entk.pipeline import runner
from entk.pipeline.experiments import Experiment

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    exp = Experiment.from_params(sm.params.exp)
    out = Path(sm.output.hf)
    # Written beside the target and renamed at the end: a killed job leaves no half-written directory.
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save = exp.registered_kind.function("save_pretrained")
    model = runner.build_model(exp)
    for step, state in runner.checkpoint_states([sm.input.checkpoints], exp.steps):
        runner.load_state(model, state, f"{sm.input.checkpoints} (step {step})")
        save(model, str(tmp / f"step_{step}"))
        print(f"step {step}: saved {tmp.name}/step_{step}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
