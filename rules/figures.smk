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
