"""Rule train: train an experiment's model with its recipe (the kind's, or the user's); all its
checkpoints in one file and the training history. A rerun after the job was killed resumes from
its latest checkpoint."""

from pathlib import Path

from entk import runner
from entk import workflow as wf

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    exp, seed = sm.params.exp, sm.params.seed
    device = wf.resolve_device(sm.params.device)
    meta = {
        "kind": exp["kind"],
        "model": exp["model"],
        "settings": exp["settings"],
        "seed": seed,
        "seed_key": exp["seed_key"],
        "weights": exp["weights"],
    }
    store = wf.ResumableCheckpoints(dict.fromkeys(exp["steps"]), Path(sm.output.checkpoints).parent / "resume", meta)
    train = runner.train_function(exp)
    history = train(
        exp["settings"],
        seed,
        exp["seed_key"],
        device=device,
        checkpoint_steps=exp["steps"],
        save_checkpoint=store.save,
        resume=store.latest(),
        log=print,
    )
    states = {step: store.load(step)["model"] for step in exp["steps"]}
    wf.save_torch(sm.output.checkpoints, {**meta, "steps": exp["steps"], "states": states})
    wf.save_csv(sm.output.history, history)
    store.finish()
