rule kernel_tms:
    input:
        model=rules.train_tms.output.model,
    output:
        kernel="results/tms/{model}/kernel_{layer}.npz",
    log:
        "logs/tms/{model}/kernel_{layer}.log",
    benchmark:
        "results/benchmarks/kernel_tms/{model}_{layer}.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        gpu=gpus(),
        mem_mb=4000,
        runtime=15,
    params:
        layer=layer_params,
        dtype=config["dtype"],
        device=config["device"],
    script:
        "../scripts/kernel_tms.py"


rule kernel_mlp:
    input:
        checkpoints=rules.train_mlp.output.checkpoints,
    output:
        kernels=expand("results/mlp/kernels/{mlp_layer}.npz", mlp_layer=MLP_LAYERS),
    log:
        "logs/mlp/kernel.log",
    benchmark:
        "results/benchmarks/kernel_mlp.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        gpu=gpus(),
        mem_mb=4000,
        runtime=30,
    params:
        layers=MLP["layers"],
        epochs=MLP_EPOCHS,
        p=MLP["p"],
        hidden=MLP["hidden"],
        dtype=config["dtype"],
        device=config["device"],
    script:
        "../scripts/kernel_mlp.py"
