rule kernel_tms:
    input:
        model=rules.train_tms.output.model,
    output:
        kernel="results/tms/{model}/kernel_{layer}.npz",
    params:
        layer=layer_params,
        dtype=config["dtype"],
        device=config["device"],
    log:
        "logs/tms/{model}/kernel_{layer}.log",
    benchmark:
        "results/benchmarks/kernel_tms/{model}_{layer}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/entk.yaml"
    script:
        "../scripts/kernel_tms.py"
