"""Rule train_mlp: train the modular-addition MLP; a checkpoint per listed epoch and the history."""

from entk import workflow as wf
from entk.models import ModMLP, modadd_inputs, modadd_labels, modadd_split
from entk.training import train_modadd

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    cfg = sm.params.mlp
    device = wf.resolve_device(sm.params.device)
    gen = wf.generator(sm.params.seed, "mlp")
    # Initialisation first, then the split: the order the grokking measurements used.
    model = ModMLP(cfg["p"], cfg["hidden"], generator=gen)
    train_idx, test_idx = modadd_split(cfg["p"], cfg["train_fraction"], gen)
    x, y = modadd_inputs(cfg["p"]), modadd_labels(cfg["p"])
    paths = dict(zip(sm.params.epochs, sm.output.checkpoints))
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
        save_checkpoint=lambda epoch, state: wf.save_torch(paths[epoch], {**state, "config": cfg}),
    )
    with wf.atomic_path(sm.output.history) as tmp:
        history.to_csv(tmp, index=False)
