"""Rule train_tms: train one TMS model on its generated data set; save weights and data."""

from entk import workflow as wf
from entk.metrics import represented_features
from entk.models import TMS, tms_data, tms_importance
from entk.training import train_tms

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    cfg, spec = sm.params.tms, sm.params.model
    device = wf.resolve_device(sm.params.device)
    gen = wf.generator(sm.params.seed, "tms", sm.wildcards.model)
    x = tms_data(cfg["n_points"], cfg["n_features"], spec["sparsity"], gen)
    model = TMS(cfg["n_features"], spec["m"], generator=gen)
    importance = tms_importance(cfg["n_features"], cfg["importance_base"])
    print(f"TMS {sm.wildcards.model}: n={cfg['n_features']} m={spec['m']} S={spec['sparsity']} on {device}")
    losses = train_tms(
        model.to(device), x.to(device), importance.float().to(device), steps=cfg["steps"], lr=cfg["lr"]
    )
    model = model.cpu()
    w = model.W.detach().double().numpy()
    print(f"final loss {losses[-1]:.3e}; features with (WᵀW)_ii ≥ 0.75: {represented_features(w)}")
    wf.save_torch(
        sm.output.model,
        {
            "state_dict": model.state_dict(),
            "x": x,
            "importance": importance,
            "n_features": cfg["n_features"],
            "m": spec["m"],
            "sparsity": spec["sparsity"],
            "final_loss": float(losses[-1]),
        },
    )
