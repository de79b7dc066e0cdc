import os
import re
import sys

from snakemake.utils import validate

# The library is imported from the checkout, so rules need no `pip install` inside their conda
# envs; PYTHONPATH carries it into every job (local, conda or cluster).
ENTK_SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, ENTK_SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (ENTK_SRC, os.getenv("PYTHONPATH")) if p)
)

from entk.config import check_config

# Our own check first: it names each bad key and the fix; Snakemake's validate then fills defaults.
check_config(config, workflow.source_path("../schemas/config.schema.yaml"))


validate(config, "../schemas/config.schema.yaml")


report: "../report/workflow.rst"


TMS = config["tms"]
TMS_MODELS = list(TMS["models"])
TMS_LAYERS = list(TMS["layers"])


def beta_str(beta):
    """β as it appears in file names: 1.0 → '1', 0.3 → '0.3'."""
    return f"{float(beta):g}"


TMS_BETAS = [beta_str(b) for b in TMS["betas"]]

MLP = config["mlp"]
MLP_EPOCHS = list(range(0, MLP["epochs"] + 1, MLP["checkpoint_every"]))
MLP_LAYERS = ["full", *MLP["layers"]]


wildcard_constraints:
    model="|".join(re.escape(m) for m in TMS_MODELS),
    layer="|".join(re.escape(l) for l in TMS_LAYERS),
    beta="|".join(re.escape(b) for b in TMS_BETAS),
    mlp_layer="|".join(MLP_LAYERS),


def layer_params(wildcards):
    """Parameter names of a kernel layer, None for all parameters."""
    spec = TMS["layers"][wildcards.layer]
    return None if spec == "all" else list(spec)


def tms_train_params():
    """The TMS settings shared by every model (a change here retrains them all)."""
    return {
        k: TMS[k] for k in ("n_features", "importance_base", "n_points", "steps", "lr")
    }


SCALE = config["scale"]
SCALE_LAYERS = ["full", "layer1", "layer2"]


def scale_train_params():
    """Training settings of the p = 113 scale experiment (checkpoints only at the ends)."""
    keys = ("p", "hidden", "train_fraction", "epochs", "lr", "weight_decay")
    return {k: SCALE[k] for k in keys}


def gpus():
    """GPUs each heavy job requests from a cluster (1 when the config runs on CUDA, else 0)."""
    return 1 if config["device"] == "cuda" else 0


def mlp_train_params():
    """The MLP training settings (a change here retrains and recomputes everything downstream)."""
    keys = (
        "p",
        "hidden",
        "train_fraction",
        "epochs",
        "lr",
        "weight_decay",
        "checkpoint_every",
    )
    return {k: MLP[k] for k in keys}


FIGURES = [
    "fig1_tms",
    "fig2_spectra",
    "fig3_grokking",
    "fig4_rotation",
    "fig5_sumdiff",
    "fig_overlap",
]


def print_claims(path):
    """Print the claims scorecard at the end of a run that produced it."""
    if os.path.exists(path):
        import pandas as pd

        from entk.claims import format_scorecard

        print(f"\nClaims scorecard ({path}):\n{format_scorecard(pd.read_csv(path))}")


def all_targets():
    """Every final output the config asks for."""
    return [
        "results/tms/metrics.csv",
        "results/claims.csv",
        *expand("results/figures/{fig}.{ext}", fig=FIGURES, ext=["png", "pdf"]),
    ]
