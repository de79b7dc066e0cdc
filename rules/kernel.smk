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
        mem_mb=4000,
        runtime=15,
    params:
        layer=layer_params,
        dtype=config["dtype"],
        device=config["device"],
    script:
        "../scripts/kernel_tms.py"
