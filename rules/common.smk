import re

from snakemake.utils import validate

from entk.pipeline.config import check_config, settle_config
from entk.pipeline.experiments import Untracked, seed_unit

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
settle_config(
    config,
    workflow.config_settings.configfiles,
    dict(workflow.config_settings.config),
    SCHEMA,
)
# Our own check first: it names each bad key and the fix; Snakemake's validate then fills defaults.
EXPERIMENTS = check_config(config, SCHEMA, os.getcwd())


validate(config, "../schemas/config.schema.yaml")


report: "../report/workflow.rst"


VIEWS = sorted({v for exp in EXPERIMENTS.values() for v in exp.views})
TRAINED = [e for e, exp in EXPERIMENTS.items() if exp.trained_here]


def _alternatives(names):
    """A wildcard pattern matching exactly these names (one that matches nothing if empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    experiment=_alternatives(EXPERIMENTS),
    view=_alternatives(VIEWS),
    run=r"paper(/seed\d+)?",


def experiment_params(wildcards):
    """The experiment as plain data for its jobs."""
    return EXPERIMENTS[wildcards.experiment].params()


def experiment_views(wildcards):
    """Every view of the experiment as plain data, which its train job checks before training; untracked,
    so that a changed view reruns its eigen job but not the training."""
    views = EXPERIMENTS[wildcards.experiment].views.values()
    return Untracked([v.params() for v in views])


def view_params(wildcards):
    """The view as plain data for its jobs."""
    return EXPERIMENTS[wildcards.experiment].views[wildcards.view].params()


def train_inputs(wildcards):
    return EXPERIMENTS[wildcards.experiment].user_files()


def eigen_inputs(wildcards):
    """The checkpoints a view reads (the workflow's bundle, or the user's files) and the user's code."""
    exp = EXPERIMENTS[wildcards.experiment]
    view = exp.views[wildcards.view]
    if exp.trained_here:
        checkpoints = [f"results/{exp.id}/checkpoints.pt"]
    else:
        checkpoints = list(exp.checkpoint_files)
    files = exp.user_files()
    if isinstance(view.output_weights, str):
        files.append(view.output_weights)
    return {"checkpoints": checkpoints, "user": files}


def analysis_inputs(wildcards):
    view = EXPERIMENTS[wildcards.experiment].views[wildcards.view]
    inputs = {"eigen": f"results/{wildcards.experiment}/{wildcards.view}/eigen.npz"}
    if view.features:
        inputs["features"] = view.features
    return inputs


def gpus():
    """GPUs each heavy job requests from a cluster (1 when the config runs on CUDA, else 0)."""
    return 1 if config.get("device", "auto") == "cuda" else 0


def eigen_threads(wildcards):
    """The eigen job's torch threads: the experiment's eigen_threads (default 1, so that jobs of
    small kernels run side by side; a large kernel's BLAS gains from more)."""
    return EXPERIMENTS[wildcards.experiment].eigen_threads


def eigen_mem_mb(wildcards):
    """The eigen job's memory request: its working budget (max_memory_gb) plus what it holds beside
    it — torch, the model, the eigenvectors of every checkpoint — taken as half the budget again.
    """
    budget = EXPERIMENTS[wildcards.experiment].max_memory_gb or 4
    return int(1500 * budget)


GENERIC_TABLES = [
    "spectra",
    "cliffs",
    "localisation",
    "phases",
    "features",
    "detectors",
]
GENERIC_FIGURES = ["fig_spectra", "fig_checkpoints", "fig_phases"]


def generic_outputs(exp_ids):
    """Every generic output of these experiments: eigenpairs, tables and figures of each view."""
    out = []
    for e in exp_ids:
        for v in EXPERIMENTS[e].views:
            out.append(f"results/{e}/{v}/eigen.npz")
            out += [f"results/{e}/{v}/{t}.csv" for t in GENERIC_TABLES]
            out += [f"results/{e}/{v}/{f}.png" for f in GENERIC_FIGURES]
    return out


# An experiment with a language_models entry is analysed by the language-model rules, not by views.
DEFAULT_EXPERIMENTS = [
    e
    for e, exp in EXPERIMENTS.items()
    if exp.default and e not in config.get("language_models", {})
]
PAPER = config.get("paper", {})


def paper_figures():
    """The paper's figures the config asks for."""
    figs = []
    if "tms" in PAPER:
        figs.append("fig1_tms")
    if "modadd" in PAPER:
        figs += [
            "fig2_spectra",
            "fig3_grokking",
            "fig4_rotation",
            "fig5_sumdiff",
            "fig_overlap",
        ]
    if "transformer" in PAPER:
        figs += ["fig_transformer", "fig_transformer_layers"]
    if lm_in_default():
        figs.append("fig_lm_detectors")
    return figs


def lm_in_default():
    """Whether the paper's language model is part of the default target (its experiment's ``default``)."""
    return "lm" in PAPER and EXPERIMENTS[PAPER["lm"]["experiment"]].default


def claim_parts():
    """The paper sections whose claims rows make results/claims.csv."""
    parts = [s for s in ("modadd", "tms", "transformer") if s in PAPER]
    return parts + (["lm"] if lm_in_default() else [])


def print_claims(path):
    """Print the claims scorecard at the end of a run that produced it."""
    if os.path.exists(path):
        import pandas as pd

        from entk.analyses.claims import format_scorecard

        print(f"\nClaims scorecard ({path}):\n{format_scorecard(pd.read_csv(path))}")


def print_seed_claims(path):
    """Print the seed study's summary at the end of a run that produced it."""
    if os.path.exists(path):
        import pandas as pd

        from entk.analyses.seeds import format_seed_table

        print(f"\nClaims over seeds ({path}):\n{format_seed_table(pd.read_csv(path))}")


def all_targets():
    """Every final output the config asks for by default."""
    targets = generic_outputs(DEFAULT_EXPERIMENTS)
    targets += lm_outputs(e for e in LANGUAGE_MODELS if EXPERIMENTS[e].default)
    if DEFAULT_EXPERIMENTS:
        targets.append("results/spectra.csv")
    targets += expand(
        "results/figures/{fig}.{ext}", fig=paper_figures(), ext=["png", "pdf"]
    )
    if claim_parts():
        targets.append("results/claims.csv")
    return targets


SEED_STUDY = PAPER.get("seeds", {}).get("experiments", {})


def study_seeds():
    """The seeds of the seed study: those every entry it maps to lists (the config check makes them equal)."""
    entries = config["experiments"]
    return sorted({s for e in SEED_STUDY.values() for s in entries[e]["seeds"]})


def seed_parts():
    """The paper sections whose experiments the seed study runs at every seed."""
    return [s for s in claim_parts() if set(section_experiments(s)) <= set(SEED_STUDY)]


def section_experiments(section):
    """The experiment ids a paper section names."""
    spec = PAPER[section]
    return spec["experiments"] if section == "tms" else [spec["experiment"]]


def run_unit(wildcards, exp_id):
    """The unit of work behind a paper experiment in a run of the paper's claims: the experiment
    itself in results/paper, its seed-study entry's seed s in results/paper/seed<s>."""
    run = wildcards.get("run", "paper")
    if run == "paper":
        return exp_id
    return seed_unit(SEED_STUDY[exp_id], int(re.fullmatch(r"paper.seed(\d+)", run)[1]))


def run_experiment(wildcards, section):
    """The resolved experiment of a single-experiment paper section in this run."""
    return EXPERIMENTS[run_unit(wildcards, PAPER[section]["experiment"])]


def run_bands(wildcards):
    """The claims bands of a run: a seed-study run judges the Transformer's accuracy by the end of
    its own training, the paper's mechanism rather than the published run's epoch."""
    bands = dict(config.get("claims", {}))
    if wildcards.get("run", "paper") != "paper" and "transformer" in PAPER:
        bands["transformer_test_acc_by_epoch"] = run_experiment(
            wildcards, "transformer"
        ).settings["epochs"]
    return bands


def paper_view_file(section, name, view_key="view"):
    """Input function: a file of a paper section's experiment and view in this run, e.g. phases.csv."""

    def inputs(wildcards):
        spec = PAPER[section]
        return (
            f"results/{run_unit(wildcards, spec['experiment'])}/{spec[view_key]}/{name}"
        )

    return inputs


def paper_eigen(section, view_key="view"):
    """Input function: the eigen file of a paper section's experiment and view in this run."""
    return paper_view_file(section, "eigen.npz", view_key)


def paper_setting(section, key=None):
    """Params function: a paper section's entry (key None) or one of its settings, e.g.
    grok_threshold."""
    return lambda wildcards: PAPER[section] if key is None else PAPER[section][key]


def paper_experiment_file(section, name):
    """Input function: a file of a paper section's experiment in this run, e.g. its history.csv."""
    return (
        lambda wildcards: f"results/{run_unit(wildcards, PAPER[section]['experiment'])}/{name}"
    )


def paper_modulus(section):
    """Params function: the modulus p of a paper section's experiment."""
    return lambda wildcards: run_experiment(wildcards, section).settings["p"]


def paper_steps(section):
    """Params function: the checkpoint steps of a paper section's experiment in this run (every one
    must have a row in its history.csv)."""
    return lambda wildcards: run_experiment(wildcards, section).steps


def claims_seeds(wildcards):
    """Params function: per paper section, the seed(s) its claims rows are measured at."""
    return {
        part: " ".join(
            str(s)
            for s in sorted({EXPERIMENTS[e].seed for e in section_experiments(part)})
        )
        for part in claim_parts()
    }


def transformer_seeds():
    """The seeds of the seed study's Transformer runs (none when it has none)."""
    return study_seeds() if "transformer" in seed_parts() else []


def seed_transformer_files(name):
    """A file of the seed study's Transformer run at each of its seeds, e.g. its history.csv."""
    return [
        paper_experiment_file("transformer", name)({"run": f"paper/seed{seed}"})
        for seed in transformer_seeds()
    ]


def paper_seed_outputs():
    """The paper's seed table, and the Transformer's seed figure when the study runs it."""
    table = ["results/paper/seed_claims.csv"] if seed_parts() else []
    figure = expand("results/figures/fig_seeds.{ext}", ext=["png", "pdf"])
    return table + (figure if transformer_seeds() else [])


# Per-seed claims tables: each experiment family appends its seed table (and figures) here, and
# `snakemake seeds` builds them all.
SEED_TABLES = []


def seed_study_outputs(wildcards):
    """Input function of the seeds target: every family's seed tables and figures."""
    return SEED_TABLES


def tms_eigen(wildcards):
    """Every TMS eigen file Figure 1 and the TMS claims read in this run: per experiment, the
    spectrum view then the heatmap views."""
    tms = PAPER["tms"]
    views = [tms["spectrum_view"], *tms["heatmap_views"]]
    return [
        f"results/{run_unit(wildcards, e)}/{v}/eigen.npz"
        for e in tms["experiments"]
        for v in views
    ]


def tms_view_betas():
    """β of each heatmap view (its output_weights' importance exponent), for labels."""
    tms = PAPER["tms"]
    exp = EXPERIMENTS[tms["experiments"][0]]
    return [exp.views[v].output_weights["importance"] for v in tms["heatmap_views"]]


# Language models (docs/spec.md §4): the `language_models:` entries.
from entk.pipeline.lm_config import STATES
from entk.pipeline.lm_config import resolve as resolve_language_models

# (check_config has reported their problems already.)
LANGUAGE_MODELS = resolve_language_models(config, EXPERIMENTS, os.getcwd())[0]


def lm_dir(exp_id, draw):
    return f"results/{exp_id}/lm/d{draw}"


def lm_params(wildcards):
    """A language-model analysis's settings, as plain data."""
    return LANGUAGE_MODELS[wildcards.experiment].settings


def lm_step(wildcards):
    """The checkpoint step of a state (trained: the last; init: the first)."""
    return LANGUAGE_MODELS[wildcards.experiment].steps[
        getattr(wildcards, "state", "trained")
    ]


def lm_model_dir(wildcards):
    """The Hugging Face directory of the model in a state (the user's, or the one lm_export writes)."""
    lm = LANGUAGE_MODELS[wildcards.experiment]
    return lm.directory(lm_step(wildcards))


def lm_model_input(wildcards):
    """What a language-model job reads its model from: the user's directory, or all lm_export writes."""
    lm = LANGUAGE_MODELS[wildcards.experiment]
    return lm_model_dir(wildcards) if lm.directories else f"results/{lm.experiment}/hf"


def lm_exported():
    """The language models whose directories the workflow writes (trained here, or random weights)."""
    return [e for e, lm in LANGUAGE_MODELS.items() if not lm.directories]


def lm_training_eigen_files(wildcards):
    """The eigen file of every module analysed at every state (init_modules), module-major in step order."""
    lm = LANGUAGE_MODELS[wildcards.experiment]
    base = lm_dir(wildcards.experiment, wildcards.draw)
    return [f"{base}/{st}/eigen/{m}.npz" for m in lm.init_modules for st in lm.training]


def lm_metric_files(wildcards):
    metric = LANGUAGE_MODELS[wildcards.experiment].settings["output_metric"]
    return [] if metric == "unembedding" else [metric]


def lm_eigen_files(wildcards):
    """The eigen file of every module analysed at one state and draw."""
    lm = LANGUAGE_MODELS[wildcards.experiment]
    base = lm_dir(wildcards.experiment, wildcards.draw)
    return [
        f"{base}/{wildcards.state}/eigen/{m}.npz"
        for m in lm.modules_at(wildcards.state)
    ]


def lm_outputs(exp_ids, draw=0):
    """The detector and Lanczos tables of the states of these language models at one draw, and
    their spectra and phases over training where their entry asks for them."""
    out = []
    for e in exp_ids:
        lm = LANGUAGE_MODELS[e]
        out += [
            f"{lm_dir(e, draw)}/{state}/{name}.csv"
            for state in lm.states
            for name in ("detectors", "lanczos")
        ]
        if lm.settings["over_training"]:
            out += [f"{lm_dir(e, draw)}/{name}.csv" for name in ("spectra", "phases")]
    return out


def lm_paper_file(state, name):
    """Input function: a table of the paper's language model (draw 0)."""
    return (
        lambda wildcards: f"{lm_dir(PAPER['lm']['experiment'], 0)}/{state}/{name}.csv"
    )


def lm_seed_runs():
    """(experiment, draw) of every row of the seed table."""
    return [(e, d) for e in PAPER["lm"]["seeds"] for d in PAPER["lm"]["draws"]]
