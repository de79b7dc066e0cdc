rule eigen_tms:
    input:
        model=rules.train_tms.output.model,
        kernel=rules.kernel_tms.output.kernel,
    output:
        eigen="results/tms/{model}/eigen_{layer}_beta{beta}.npz",
        metrics="results/tms/{model}/metrics_{layer}_beta{beta}.csv",
    log:
        "logs/tms/{model}/eigen_{layer}_beta{beta}.log",
    benchmark:
        "results/benchmarks/eigen_tms/{model}_{layer}_beta{beta}.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        gpu=gpus(),
        mem_mb=4000,
        runtime=15,
    params:
        beta=lambda wc: float(wc.beta),
        spec=lambda wc: TMS["models"][wc.model],
        top_k=TMS["top_k"],
        device=config["device"],
    script:
        "../scripts/eigen_tms.py"


rule eigen_mlp:
    input:
        kernels="results/mlp/kernels/{mlp_layer}.npz",
    output:
        eigen="results/mlp/eigen/{mlp_layer}.npz",
    log:
        "logs/mlp/eigen_{mlp_layer}.log",
    benchmark:
        "results/benchmarks/eigen_mlp/{mlp_layer}.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        gpu=gpus(),
        mem_mb=4000,
        runtime=30,
    params:
        top_k=MLP["top_k"],
        device=config["device"],
    script:
        "../scripts/eigen_mlp.py"


rule eigen_scale:
    input:
        checkpoint=f"results/scale/checkpoints/epoch{SCALE['epochs']}.pt",
    output:
        eigen=expand("results/scale/eigen/{layer}.npz", layer=SCALE_LAYERS),
    log:
        "logs/scale/eigen.log",
    benchmark:
        "results/benchmarks/eigen_scale.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 2
    resources:
        gpu=gpus(),
        mem_mb=int(SCALE["max_memory_gb"] * 1500),
        runtime=60,
    params:
        layers={"layer1": ["fc1"], "layer2": ["fc2"]},
        p=SCALE["p"],
        hidden=SCALE["hidden"],
        top_k=SCALE["top_k"],
        max_memory_gb=SCALE["max_memory_gb"],
        device=config["device"],
    script:
        "../scripts/eigen_scale.py"


rule eigen_scale_flat:
    input:
        checkpoint=f"results/scale/checkpoints/epoch{SCALE['epochs']}.pt",
    output:
        eigen="results/scale/eigen/flatten.npz",
    log:
        "logs/scale/eigen_flatten.log",
    benchmark:
        "results/benchmarks/eigen_scale_flat.tsv"
    conda:
        "../envs/entk.yaml"
    threads: 2
    resources:
        gpu=gpus(),
        mem_mb=int(SCALE["max_memory_gb"] * 1500),
        runtime=60,
    params:
        p=SCALE["p"],
        hidden=SCALE["hidden"],
        top_k=SCALE["flat_top_k"],
        max_memory_gb=SCALE["max_memory_gb"],
        device=config["device"],
    script:
        "../scripts/eigen_scale_flat.py"
