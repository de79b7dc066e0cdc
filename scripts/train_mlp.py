"""Rule train_mlp: train the modular-addition MLP; a checkpoint per listed epoch and the history.
A rerun after the job was killed resumes from its latest checkpoint."""

from pathlib import Path

from entk import workflow as wf
from entk.models import ModMLP, modadd_inputs, modadd_labels, modadd_split
from entk.training import train_modadd

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    cfg, seed = sm.params.mlp, sm.params.seed
    device = wf.resolve_device(sm.params.device)
    gen = wf.generator(seed, "mlp")
    # Initialisation first, then the split: the order the grokking measurements used.
    model = ModMLP(cfg["p"], cfg["hidden"], generator=gen)
    train_idx, test_idx = modadd_split(cfg["p"], cfg["train_fraction"], gen)
    x, y = modadd_inputs(cfg["p"]), modadd_labels(cfg["p"])
    store = wf.ResumableCheckpoints(
        dict(zip(sm.params.epochs, sm.output.checkpoints)),
        Path(sm.output.history).parent / "resume",
        {"mlp": cfg, "seed": seed},
    )
    print(f"p={cfg['p']} hidden={cfg['hidden']}: {len(train_idx)} train / {len(test_idx)} test pairs on {device}")
    history = train_modadd(
        model.to(device),
        x.to(device),
        y.to(device),
        train_idx.to(device),
        test_idx.to(device),
        epochs=cfg["epochs"],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        checkpoint_epochs=sm.params.epochs,
        save_checkpoint=store.save,
        resume=store.latest(),
    )
    with wf.atomic_path(sm.output.history) as tmp:
        history.to_csv(tmp, index=False)
    store.finish()
