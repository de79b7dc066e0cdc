rule tms_summary:
    input:
        expand(
            "results/tms/{model}/metrics_{layer}_beta{beta}.csv",
            model=TMS_MODELS,
            layer=TMS_LAYERS,
            beta=TMS_BETAS,
        ),
    output:
        csv=report(
            "results/tms/metrics.csv",
            caption="../report/tms_metrics.rst",
            category="TMS",
        ),
    log:
        "logs/tms/summary.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    script:
        "../scripts/concat_csv.py"
