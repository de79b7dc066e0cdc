# Language models (docs/spec.md §4): for each `language_models:` entry, its checkpoints as Hugging
# Face directories (the user's own, or saved here), probe contexts per draw, one eNTK eigen job per
# module and state, the hidden states of the PCA baseline and the detector tables, and with
# over_training the spectra and phases across every checkpoint; the `paper: lm` section's Table-3
# analogue, figure, claims and seed table.


wildcard_constraints:
    draw=r"\d+",
    state="|".join(STATES) + r"|step\d+",
    module=r"[A-Za-z0-9_.]+",


rule lm_export:
    input:
        checkpoints="results/{experiment}/checkpoints.pt",
    output:
        hf=directory("results/{experiment}/hf"),
    log:
        "logs/{experiment}/lm_export.log",
    benchmark:
        "results/benchmarks/{experiment}/lm_export.tsv"
    wildcard_constraints:
        experiment=_alternatives(lm_exported()),
    conda:
        "../envs/compute.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        exp=experiment_params,
    script:
        "../scripts/lm_export.py"


rule lm_contexts:
    input:
        hf=lm_model_input,
    output:
        contexts="results/{experiment}/lm/d{draw}/contexts.npz",
    log:
        "logs/{experiment}/lm/d{draw}/contexts.log",
    benchmark:
        "results/benchmarks/{experiment}/lm/d{draw}/contexts.tsv"
    conda:
        "../envs/compute.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        exp=experiment_params,
        lm=lm_params,
        model_dir=lm_model_dir,
        modules=lambda wc: LANGUAGE_MODELS[wc.experiment].modules,
        seed=config["seed"],
    script:
        "../scripts/lm_contexts.py"


rule lm_hidden:
    input:
        hf=lm_model_input,
        contexts="results/{experiment}/lm/d{draw}/contexts.npz",
    output:
        hidden="results/{experiment}/lm/d{draw}/{state}/hidden.npz",
    log:
        "logs/{experiment}/lm/d{draw}/{state}/hidden.log",
    benchmark:
        "results/benchmarks/{experiment}/lm/d{draw}/{state}/hidden.tsv"
    conda:
        "../envs/compute.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        lm=lm_params,
        model_dir=lm_model_dir,
    script:
        "../scripts/lm_hidden.py"


# D̃ of all of a state's modules from one chain of reverse passes (GBs: removed once its eigen jobs are done).
rule lm_jacobians:
    input:
        hf=lm_model_input,
        contexts="results/{experiment}/lm/d{draw}/contexts.npz",
        metric=lm_metric_files,
    output:
        jacobians=temp(directory("results/{experiment}/lm/d{draw}/{state}/jacobians")),
    log:
        "logs/{experiment}/lm/d{draw}/{state}/jacobians.log",
    benchmark:
        "results/benchmarks/{experiment}/lm/d{draw}/{state}/jacobians.tsv"
    conda:
        "../envs/compute.yaml"
    threads: 1
    resources:
        gpu=gpus(),
        mem_mb=eigen_mem_mb,
        runtime=60,
    params:
        lm=lm_params,
        model_dir=lm_model_dir,
        modules=lambda wc: LANGUAGE_MODELS[wc.experiment].modules_at(wc.state),
        max_memory_gb=lambda wc: EXPERIMENTS[wc.experiment].max_memory_gb,
        device=config.get("device", "auto"),
    script:
        "../scripts/lm_jacobians.py"


rule lm_eigen:
    input:
        hf=lm_model_input,
        contexts="results/{experiment}/lm/d{draw}/contexts.npz",
        metric=lm_metric_files,
        jacobians="results/{experiment}/lm/d{draw}/{state}/jacobians",
    output:
        eigen="results/{experiment}/lm/d{draw}/{state}/eigen/{module}.npz",
    log:
        "logs/{experiment}/lm/d{draw}/{state}/eigen/{module}.log",
    benchmark:
        "results/benchmarks/{experiment}/lm/d{draw}/{state}/eigen/{module}.tsv"
    conda:
        "../envs/compute.yaml"
    threads: 1
    resources:
        gpu=gpus(),
        mem_mb=eigen_mem_mb,
        runtime=60,
    params:
        lm=lm_params,
        model_dir=lm_model_dir,
        max_memory_gb=lambda wc: EXPERIMENTS[wc.experiment].max_memory_gb,
        device=config.get("device", "auto"),
    script:
        "../scripts/lm_eigen.py"


rule lm_spectra:
    input:
        eigen=lm_training_eigen_files,
    output:
        spectra="results/{experiment}/lm/d{draw}/spectra.csv",
        phases="results/{experiment}/lm/d{draw}/phases.csv",
    log:
        "logs/{experiment}/lm/d{draw}/spectra.log",
    benchmark:
        "results/benchmarks/{experiment}/lm/d{draw}/spectra.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        modules=lambda wc: LANGUAGE_MODELS[wc.experiment].init_modules,
        steps=lambda wc: [
            LANGUAGE_MODELS[wc.experiment].steps[st]
            for st in LANGUAGE_MODELS[wc.experiment].training
        ],
    script:
        "../scripts/lm_spectra.py"


rule lm_detectors:
    input:
        contexts="results/{experiment}/lm/d{draw}/contexts.npz",
        hidden="results/{experiment}/lm/d{draw}/{state}/hidden.npz",
        eigen=lm_eigen_files,
    output:
        detectors="results/{experiment}/lm/d{draw}/{state}/detectors.csv",
        lanczos="results/{experiment}/lm/d{draw}/{state}/lanczos.csv",
    log:
        "logs/{experiment}/lm/d{draw}/{state}/detectors.log",
    benchmark:
        "results/benchmarks/{experiment}/lm/d{draw}/{state}/detectors.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        lm=lm_params,
        modules=lambda wc: LANGUAGE_MODELS[wc.experiment].modules_at(wc.state),
    script:
        "../scripts/lm_detectors.py"


rule claims_lm:
    input:
        trained=lm_paper_file("trained", "detectors"),
        init=lm_paper_file("init", "detectors"),
        lanczos_trained=lm_paper_file("trained", "lanczos"),
        lanczos_init=lm_paper_file("init", "lanczos"),
    output:
        table=report(
            "results/paper/lm_table3.csv",
            caption="../report/lm_table3.rst",
            category="Language model",
        ),
        lanczos="results/paper/lm_lanczos.csv",
        claims="results/paper/lm_claims.csv",
    log:
        "logs/paper/lm_claims.log",
    benchmark:
        "results/benchmarks/paper/lm_claims.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        classes=lambda wc: LANGUAGE_MODELS[PAPER["lm"]["experiment"]].settings[
            "classes"
        ],
    script:
        "../scripts/claims_lm.py"


rule figure_lm:
    input:
        trained=lm_paper_file("trained", "detectors"),
        init=lm_paper_file("init", "detectors"),
    output:
        png=report(
            "results/figures/fig_lm_detectors.png",
            caption="../report/fig_lm_detectors.rst",
            category="Figures",
        ),
        pdf="results/figures/fig_lm_detectors.pdf",
    log:
        "logs/figures/fig_lm_detectors.log",
    benchmark:
        "results/benchmarks/figures/fig_lm_detectors.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        classes=lambda wc: LANGUAGE_MODELS[PAPER["lm"]["experiment"]].settings[
            "classes"
        ],
    script:
        "../scripts/figure_lm.py"


if "lm" in PAPER:

    SEED_TABLES.append("results/paper/lm_seed_table.csv")


rule lm_seed_table:
    input:
        detectors=lambda wc: [
            f"{lm_dir(e, d)}/trained/detectors.csv" for e, d in lm_seed_runs()
        ],
    output:
        csv=report(
            "results/paper/lm_seed_table.csv",
            caption="../report/lm_seed_table.rst",
            category="Language model",
        ),
    log:
        "logs/paper/lm_seed_table.log",
    benchmark:
        "results/benchmarks/paper/lm_seed_table.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        runs=lambda wc: lm_seed_runs(),
    script:
        "../scripts/lm_seed_table.py"
