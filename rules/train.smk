rule train_tms:
    output:
        model="results/tms/{model}/model.pt",
    log:
        "logs/tms/{model}/train.log",
    benchmark:
        "results/benchmarks/train_tms/{model}.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        model=lambda wc: TMS["models"][wc.model],
        tms=tms_train_params(),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_tms.py"
