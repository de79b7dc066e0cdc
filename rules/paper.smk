# The paper's figures and claims: the only rules that know which experiments they draw (the
# `paper:` section of the config). Each reads the generic outputs of those experiments.
# Every rule here is a light, torch-free job on eigen files and CSVs: it runs on the submit host
# (localrule) in the analysis env, on one core (Snakemake's default threads), with the profile's
# default-resources; a rule that needs more says so and why.


rule claims_tms:
    input:
        eigen=tms_eigen,
    output:
        metrics=report(
            "results/{run}/tms_metrics.csv",
            caption="../report/tms_metrics.rst",
            category="TMS",
        ),
        claims="results/{run}/tms_claims.csv",
    log:
        "logs/{run}/tms.log",
    benchmark:
        "results/benchmarks/{run}/tms.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        tms=paper_setting("tms"),
        betas=lambda wc: tms_view_betas(),
        claims=run_bands,
        cliffs=config.get("cliffs", {}),
    script:
        "../scripts/claims_tms.py"


rule figure_1:
    input:
        eigen=tms_eigen,
    output:
        png=report(
            "results/figures/fig1_tms.png",
            caption="../report/fig1.rst",
            category="Figures",
        ),
        pdf="results/figures/fig1_tms.pdf",
    log:
        "logs/figures/fig1.log",
    benchmark:
        "results/benchmarks/figures/fig1.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        tms=paper_setting("tms"),
        betas=lambda wc: tms_view_betas(),
        settings=lambda wc: {
            e: EXPERIMENTS[e].settings for e in PAPER["tms"]["experiments"]
        },
        cliffs=config.get("cliffs", {}),
    script:
        "../scripts/figure_1.py"


rule smooth_rotation:
    input:
        eigen=paper_eigen("modadd"),
    output:
        rotation="results/{run}/rotation.npz",
    log:
        "logs/{run}/rotate.log",
    benchmark:
        "results/benchmarks/{run}/rotate.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    resources:
        runtime=10,  # one pass per checkpoint of the experiment
    params:
        p=paper_modulus("modadd"),
        fig5_epochs=paper_setting("modadd", "fig5_epochs"),
    script:
        "../scripts/smooth_rotation.py"


rule overlap_curve:
    input:
        eigen=paper_eigen("modadd"),
        history=paper_experiment_file("modadd", "history.csv"),
    output:
        csv=report(
            "results/{run}/overlap_curve.csv",
            caption="../report/overlap_csv.rst",
            category="Modular addition",
        ),
    log:
        "logs/{run}/overlap.log",
    benchmark:
        "results/benchmarks/{run}/overlap.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    resources:
        runtime=10,  # one pass per checkpoint of the experiment
    params:
        history_steps=paper_steps("modadd"),
        p=paper_modulus("modadd"),
        grok_threshold=paper_setting("modadd", "grok_threshold"),
    script:
        "../scripts/overlap_curve.py"


rule claims_modadd:
    input:
        eigen=paper_eigen("modadd"),
        history=paper_experiment_file("modadd", "history.csv"),
        overlap="results/{run}/overlap_curve.csv",
        rotation="results/{run}/rotation.npz",
        phases=paper_view_file("modadd", "phases.csv"),
    output:
        csv="results/{run}/modadd_claims.csv",
    log:
        "logs/{run}/modadd_claims.log",
    benchmark:
        "results/benchmarks/{run}/claims_modadd.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        history_steps=paper_steps("modadd"),
        claims=run_bands,
        p=paper_modulus("modadd"),
        grok_threshold=paper_setting("modadd", "grok_threshold"),
    script:
        "../scripts/claims_modadd.py"


rule claims:
    input:
        expand("results/paper/{part}_claims.csv", part=claim_parts()),
    output:
        csv=report(
            "results/claims.csv", caption="../report/claims.rst", category="Claims"
        ),
    log:
        "logs/claims.log",
    benchmark:
        "results/benchmarks/paper/claims.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        parts=claim_parts(),
        seeds=claims_seeds,
    script:
        "../scripts/claims_table.py"


rule claims_scale:
    input:
        eigen=paper_eigen("scale"),
    output:
        csv=report(
            "results/paper/scale_claims.csv",
            caption="../report/claims.rst",
            category="Scale (p = 113)",
        ),
    log:
        "logs/paper/scale_claims.log",
    benchmark:
        "results/benchmarks/paper/scale_claims.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        claims=run_bands,
        p=paper_modulus("scale"),
    script:
        "../scripts/claims_scale.py"


rule figure_2:
    input:
        eigen=paper_eigen("modadd"),
    output:
        png=report(
            "results/figures/fig2_spectra.png",
            caption="../report/fig2.rst",
            category="Figures",
        ),
        pdf="results/figures/fig2_spectra.pdf",
    log:
        "logs/figures/fig2_spectra.log",
    benchmark:
        "results/benchmarks/figures/fig2_spectra.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        p=paper_modulus("modadd"),
    script:
        "../scripts/figure_2.py"


rule figure_3:
    input:
        eigen=paper_eigen("modadd"),
        history=paper_experiment_file("modadd", "history.csv"),
    output:
        png=report(
            "results/figures/fig3_grokking.png",
            caption="../report/fig3.rst",
            category="Figures",
        ),
        pdf="results/figures/fig3_grokking.pdf",
    log:
        "logs/figures/fig3_grokking.log",
    benchmark:
        "results/benchmarks/figures/fig3_grokking.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        history_steps=paper_steps("modadd"),
        p=paper_modulus("modadd"),
        epochs=paper_setting("modadd", "fig3_epochs"),
        grok_threshold=paper_setting("modadd", "grok_threshold"),
    script:
        "../scripts/figure_3.py"


rule figure_4:
    input:
        rotation="results/paper/rotation.npz",
    output:
        png=report(
            "results/figures/fig4_rotation.png",
            caption="../report/fig4.rst",
            category="Figures",
        ),
        pdf="results/figures/fig4_rotation.pdf",
    log:
        "logs/figures/fig4_rotation.log",
    benchmark:
        "results/benchmarks/figures/fig4_rotation.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/figure_4.py"


rule figure_5:
    input:
        rotation="results/paper/rotation.npz",
    output:
        png=report(
            "results/figures/fig5_sumdiff.png",
            caption="../report/fig5.rst",
            category="Figures",
        ),
        pdf="results/figures/fig5_sumdiff.pdf",
    log:
        "logs/figures/fig5_sumdiff.log",
    benchmark:
        "results/benchmarks/figures/fig5_sumdiff.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        epochs=paper_setting("modadd", "fig5_epochs"),
    script:
        "../scripts/figure_5.py"


rule figure_overlap:
    input:
        overlap="results/paper/overlap_curve.csv",
    output:
        png=report(
            "results/figures/fig_overlap.png",
            caption="../report/fig_overlap.rst",
            category="Figures",
        ),
        pdf="results/figures/fig_overlap.pdf",
    log:
        "logs/figures/fig_overlap.log",
    benchmark:
        "results/benchmarks/figures/fig_overlap.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        p=paper_modulus("modadd"),
    script:
        "../scripts/figure_overlap.py"


rule figure_scale:
    input:
        eigen=paper_eigen("scale"),
    output:
        png=report(
            "results/figures/fig_scale_spectra.png",
            caption="../report/fig_scale.rst",
            category="Scale (p = 113)",
        ),
        pdf="results/figures/fig_scale_spectra.pdf",
    log:
        "logs/figures/fig_scale_spectra.log",
    benchmark:
        "results/benchmarks/figures/fig_scale_spectra.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        p=paper_modulus("scale"),
    script:
        "../scripts/figure_2.py"


rule claims_transformer:
    input:
        tensors=paper_eigen("transformer", "tensors_view"),
        unembed=paper_eigen("transformer", "unembed_view"),
        history=paper_experiment_file("transformer", "history.csv"),
        phases=paper_view_file("transformer", "phases.csv", "unembed_view"),
    output:
        frequencies="results/{run}/transformer_keys.csv",
        layers=report(
            "results/{run}/transformer_layers.csv",
            caption="../report/transformer_layers_csv.rst",
            category="Transformer",
        ),
        curve="results/{run}/transformer_grokking.csv",
        claims="results/{run}/transformer_claims.csv",
    log:
        "logs/{run}/transformer.log",
    benchmark:
        "results/benchmarks/{run}/transformer.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    resources:
        runtime=10,  # one pass per checkpoint of the experiment
    params:
        history_steps=paper_steps("transformer"),
        p=paper_modulus("transformer"),
        grok_threshold=paper_setting("transformer", "grok_threshold"),
        claims=run_bands,
    script:
        "../scripts/claims_transformer.py"


rule figure_transformer_layers:
    input:
        frequencies="results/paper/transformer_keys.csv",
        layers="results/paper/transformer_layers.csv",
    output:
        png=report(
            "results/figures/fig_transformer_layers.png",
            caption="../report/fig_transformer_layers.rst",
            category="Figures",
        ),
        pdf="results/figures/fig_transformer_layers.pdf",
    log:
        "logs/figures/fig_transformer_layers.log",
    benchmark:
        "results/benchmarks/figures/fig_transformer_layers.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/figure_transformer_layers.py"


rule figure_transformer:
    input:
        curve="results/paper/transformer_grokking.csv",
        history=paper_experiment_file("transformer", "history.csv"),
    output:
        png=report(
            "results/figures/fig_transformer.png",
            caption="../report/fig_transformer.rst",
            category="Figures",
        ),
        pdf="results/figures/fig_transformer.pdf",
    log:
        "logs/figures/fig_transformer.log",
    benchmark:
        "results/benchmarks/figures/fig_transformer.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        history_steps=paper_steps("transformer"),
        grok_threshold=paper_setting("transformer", "grok_threshold"),
    script:
        "../scripts/figure_transformer.py"


# The seed study (`snakemake seeds`): the claims rules above, run once per seed under
# results/paper/seed<s>/ on the seed-study entries (paper.seeds), gathered into one table.
SEED_TABLES.extend(paper_seed_outputs())


rule seed_claims:
    input:
        [
            f"results/paper/seed{seed}/{part}_claims.csv"
            for seed in study_seeds()
            for part in seed_parts()
        ],
    output:
        csv=report(
            "results/paper/seed_claims.csv",
            caption="../report/seed_claims.rst",
            category="Seeds",
        ),
    log:
        "logs/paper/seed_claims.log",
    benchmark:
        "results/benchmarks/paper/seed_claims.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        seeds=[seed for seed in study_seeds() for part in seed_parts()],
    script:
        "../scripts/seed_claims.py"


rule figure_seeds:
    input:
        histories=seed_transformer_files("history.csv"),
        curves=[
            f"results/paper/seed{seed}/transformer_grokking.csv"
            for seed in transformer_seeds()
        ],
    output:
        png=report(
            "results/figures/fig_seeds.png",
            caption="../report/fig_seeds.rst",
            category="Seeds",
        ),
        pdf="results/figures/fig_seeds.pdf",
    log:
        "logs/figures/fig_seeds.log",
    benchmark:
        "results/benchmarks/figures/fig_seeds.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        seeds=transformer_seeds(),
        steps=[
            run_experiment({"run": f"paper/seed{seed}"}, "transformer").steps
            for seed in transformer_seeds()
        ],
        grok_threshold=paper_setting("transformer", "grok_threshold"),
    script:
        "../scripts/figure_seeds.py"
