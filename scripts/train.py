"""Rule train: train an experiment's model with its recipe (the kind's, or the user's); all its
checkpoints in one file and the training history. The model, the probe inputs and every view are
checked before training (entk.pipeline.preflight), the recipe's contract as it runs. A rerun after the job
was killed resumes from its latest checkpoint unless the settings or the recipe's code changed."""

from pathlib import Path

from entk import shared as wf
from entk.pipeline import preflight, runner
from entk.pipeline.experiments import Experiment, View

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    exp = Experiment.from_params(sm.params.exp)
    device = wf.resolve_device(sm.params.device)
    shapes = preflight.check_experiment(exp, [View(**v) for v in sm.params.views.value], device)
    meta = {
        "kind": exp.kind,
        "model": exp.model,
        "settings": exp.settings,
        "seed": exp.seed,
        "seed_key": exp.seed_key,
        "weights": exp.weights,
    }
    side = Path(sm.output.checkpoints).parent / "resume"
    store = wf.ResumableCheckpoints(dict.fromkeys(exp.steps), side, {**meta, "code": preflight.code_digest(exp)})
    recipe = f"{runner.config_key(exp, 'weights', 'train')}: {exp.weights['train']}" if exp.kind is None else exp.kind
    checkpoints = preflight.RecipeCheckpoints(store, exp.steps, shapes, recipe)
    train = runner.train_function(exp)
    history = train(
        exp.settings,
        exp.seed,
        exp.seed_key,
        device=device,
        checkpoint_steps=exp.steps,
        save_checkpoint=checkpoints,
        resume=store.latest(),
        log=print,
    )
    history = checkpoints.finish(history)
    states = {step: store.load(step)["model"] for step in exp.steps}
    wf.save_torch(sm.output.checkpoints, {**meta, "steps": exp.steps, "states": states})
    wf.save_csv(sm.output.history, history)
    store.finish()
