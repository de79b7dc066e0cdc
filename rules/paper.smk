# The paper's figures and claims: the only rules that know which experiments they draw (the
# `paper:` section of the config). Each reads the generic outputs of those experiments.


rule claims_tms:
    input:
        eigen=tms_eigen,
    output:
        metrics=report(
            "results/paper/tms_metrics.csv",
            caption="../report/tms_metrics.rst",
            category="TMS",
        ),
        claims="results/paper/tms_claims.csv",
    log:
        "logs/paper/tms.log",
    benchmark:
        "results/benchmarks/paper/tms.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        tms=lambda wc: PAPER["tms"],
        betas=lambda wc: tms_view_betas(),
        claims=config.get("claims", {}),
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        tms=lambda wc: PAPER["tms"],
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
        rotation="results/paper/rotation.npz",
    log:
        "logs/paper/rotate.log",
    benchmark:
        "results/benchmarks/paper/rotate.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        p=paper_modulus("modadd"),
        fig5_epochs=lambda wc: PAPER["modadd"]["fig5_epochs"],
    script:
        "../scripts/smooth_rotation.py"


rule overlap_curve:
    input:
        eigen=paper_eigen("modadd"),
        history=paper_experiment_file("modadd", "history.csv"),
    output:
        csv=report(
            "results/paper/overlap_curve.csv",
            caption="../report/overlap_csv.rst",
            category="Modular addition",
        ),
    log:
        "logs/paper/overlap.log",
    benchmark:
        "results/benchmarks/paper/overlap.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        history_steps=paper_steps("modadd"),
        p=paper_modulus("modadd"),
        grok_threshold=lambda wc: PAPER["modadd"]["grok_threshold"],
    script:
        "../scripts/overlap_curve.py"


rule claims_modadd:
    input:
        eigen=paper_eigen("modadd"),
        history=paper_experiment_file("modadd", "history.csv"),
        overlap=rules.overlap_curve.output.csv,
        rotation=rules.smooth_rotation.output.rotation,
        phases=lambda wc: f"results/{PAPER['modadd']['experiment']}/{PAPER['modadd']['view']}/phases.csv",
    output:
        csv="results/paper/modadd_claims.csv",
    log:
        "logs/paper/modadd_claims.log",
    benchmark:
        "results/benchmarks/paper/claims_modadd.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        history_steps=paper_steps("modadd"),
        claims=config.get("claims", {}),
        p=paper_modulus("modadd"),
        grok_threshold=lambda wc: PAPER["modadd"]["grok_threshold"],
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
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/concat_csv.py"


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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        claims=config.get("claims", {}),
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        history_steps=paper_steps("modadd"),
        p=paper_modulus("modadd"),
        epochs=lambda wc: PAPER["modadd"]["fig3_epochs"],
        grok_threshold=lambda wc: PAPER["modadd"]["grok_threshold"],
    script:
        "../scripts/figure_3.py"


rule figure_4:
    input:
        rotation=rules.smooth_rotation.output.rotation,
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/figure_4.py"


rule figure_5:
    input:
        rotation=rules.smooth_rotation.output.rotation,
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        epochs=lambda wc: PAPER["modadd"]["fig5_epochs"],
    script:
        "../scripts/figure_5.py"


rule figure_overlap:
    input:
        overlap=rules.overlap_curve.output.csv,
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        p=paper_modulus("scale"),
    script:
        "../scripts/figure_2.py"


rule claims_transformer:
    input:
        tensors=paper_eigen("transformer", "tensors_view"),
        unembed=paper_eigen("transformer", "unembed_view"),
        history=paper_experiment_file("transformer", "history.csv"),
        phases=lambda wc: f"results/{PAPER['transformer']['experiment']}/{PAPER['transformer']['unembed_view']}/phases.csv",
    output:
        frequencies="results/paper/transformer_keys.csv",
        layers=report(
            "results/paper/transformer_layers.csv",
            caption="../report/transformer_layers_csv.rst",
            category="Transformer",
        ),
        curve="results/paper/transformer_grokking.csv",
        claims="results/paper/transformer_claims.csv",
    log:
        "logs/paper/transformer.log",
    benchmark:
        "results/benchmarks/paper/transformer.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        history_steps=paper_steps("transformer"),
        p=paper_modulus("transformer"),
        grok_threshold=lambda wc: PAPER["transformer"]["grok_threshold"],
        claims=config.get("claims", {}),
    script:
        "../scripts/claims_transformer.py"


rule figure_transformer_layers:
    input:
        frequencies=rules.claims_transformer.output.frequencies,
        layers=rules.claims_transformer.output.layers,
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/figure_transformer.py"


rule figure_transformer:
    input:
        curve=rules.claims_transformer.output.curve,
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        history_steps=paper_steps("transformer"),
        grok_threshold=lambda wc: PAPER["transformer"]["grok_threshold"],
    script:
        "../scripts/figure_transformer.py"
