rule figure_1:
    input:
        models=expand("results/tms/{model}/model.pt", model=TMS_MODELS),
        eigen=expand(
            "results/tms/{model}/eigen_full_beta{beta}.npz",
            model=TMS_MODELS,
            beta=TMS_BETAS,
        ),
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
        "results/benchmarks/figure_1.tsv"
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        models=TMS_MODELS,
        specs=TMS["models"],
        betas=TMS_BETAS,
    script:
        "../scripts/figure_1.py"


rule figure_2:
    input:
        eigen=expand("results/mlp/eigen/{mlp_layer}.npz", mlp_layer=MLP_LAYERS),
    output:
        png=report(
            "results/figures/fig2_spectra.png",
            caption="../report/fig2.rst",
            category="Figures",
        ),
        pdf="results/figures/fig2_spectra.pdf",
    log:
        "logs/figures/fig2.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        layers=MLP_LAYERS,
        p=MLP["p"],
    script:
        "../scripts/figure_2.py"


rule figure_3:
    input:
        history=rules.train_mlp.output.history,
        full="results/mlp/eigen/full.npz",
    output:
        png=report(
            "results/figures/fig3_grokking.png",
            caption="../report/fig3.rst",
            category="Figures",
        ),
        pdf="results/figures/fig3_grokking.pdf",
    log:
        "logs/figures/fig3.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        epochs=MLP["fig3_epochs"],
        p=MLP["p"],
        grok_threshold=MLP["grok_threshold"],
    script:
        "../scripts/figure_3.py"


rule figure_4:
    input:
        rotation=rules.rotate_mlp.output.rotation,
    output:
        png=report(
            "results/figures/fig4_rotation.png",
            caption="../report/fig4.rst",
            category="Figures",
        ),
        pdf="results/figures/fig4_rotation.pdf",
    log:
        "logs/figures/fig4.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/figure_4.py"


rule figure_5:
    input:
        rotation=rules.rotate_mlp.output.rotation,
    output:
        png=report(
            "results/figures/fig5_sumdiff.png",
            caption="../report/fig5.rst",
            category="Figures",
        ),
        pdf="results/figures/fig5_sumdiff.pdf",
    log:
        "logs/figures/fig5.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        epochs=MLP["fig5_epochs"],
    script:
        "../scripts/figure_5.py"


rule figure_overlap:
    input:
        overlap=rules.overlap_mlp.output.csv,
    output:
        png=report(
            "results/figures/fig_overlap.png",
            caption="../report/fig_overlap.rst",
            category="Figures",
        ),
        pdf="results/figures/fig_overlap.pdf",
    log:
        "logs/figures/fig_overlap.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        p=MLP["p"],
    script:
        "../scripts/figure_overlap.py"


rule figure_scale:
    input:
        eigen=expand("results/scale/eigen/{layer}.npz", layer=SCALE_LAYERS),
    output:
        png=report(
            "results/figures/fig_scale_spectra.png",
            caption="../report/fig_scale.rst",
            category="Scale (p = 113)",
        ),
        pdf="results/figures/fig_scale_spectra.pdf",
    log:
        "logs/figures/fig_scale.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        layers=SCALE_LAYERS,
        p=SCALE["p"],
    script:
        "../scripts/figure_2.py"
