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


rule train_scale:
    output:
        checkpoints=expand(
            "results/scale/checkpoints/epoch{epoch}.pt", epoch=[0, SCALE["epochs"]]
        ),
        history="results/scale/history.csv",
    log:
        "logs/scale/train.log",
    benchmark:
        "results/benchmarks/train_scale.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        mlp=scale_train_params(),
        epochs=[0, SCALE["epochs"]],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_mlp.py"
