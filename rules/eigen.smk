rule eigen:
    input:
        unpack(eigen_inputs),
    output:
        eigen="results/{experiment}/{view}/eigen.npz",
    log:
        "logs/{experiment}/{view}/eigen.log",
    benchmark:
        "results/benchmarks/{experiment}/{view}/eigen.tsv"
    conda:
        "../envs/compute.yaml"
    threads: eigen_threads
    resources:
        gpu=gpus(),
        mem_mb=eigen_mem_mb,
        runtime=60,
    params:
        exp=experiment_params,
        view=view_params,
        device=config.get("device", "auto"),
    script:
        "../scripts/eigen.py"
