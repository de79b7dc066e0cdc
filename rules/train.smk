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


rule train_mlp:
    output:
        checkpoints=expand("results/mlp/checkpoints/epoch{epoch}.pt", epoch=MLP_EPOCHS),
        history="results/mlp/history.csv",
    log:
        "logs/mlp/train.log",
    benchmark:
        "results/benchmarks/train_mlp.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        mlp=mlp_train_params(),
        epochs=MLP_EPOCHS,
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_mlp.py"
