rule train:
    input:
        train_inputs,
    output:
        checkpoints="results/{experiment}/checkpoints.pt",
        history="results/{experiment}/history.csv",
    log:
        "logs/{experiment}/train.log",
    benchmark:
        "results/benchmarks/{experiment}/train.tsv"
    wildcard_constraints:
        experiment=_alternatives(TRAINED),
    # A training gates every job of its experiment: start them all before any eigen job, or the
    # scheduler (which breaks ties arbitrarily) can leave a long one, and its chain, for the end.
    priority: 1
    conda:
        "../envs/compute.yaml"
    threads: 1
    resources:
        gpu=gpus(),
        mem_mb=4000,
        runtime=60,
    params:
        exp=experiment_params,
        views=experiment_views,
        device=config.get("device", "auto"),
    script:
        "../scripts/train.py"
