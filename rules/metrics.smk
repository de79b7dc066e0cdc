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


rule rotate_mlp:
    input:
        layer1="results/mlp/eigen/layer1.npz",
        full="results/mlp/eigen/full.npz",
    output:
        rotation="results/mlp/rotation.npz",
    log:
        "logs/mlp/rotate.log",
    benchmark:
        "results/benchmarks/rotate_mlp.tsv"
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        p=MLP["p"],
        final_epoch=MLP_EPOCHS[-1],
        fig5_epochs=MLP["fig5_epochs"],
    script:
        "../scripts/rotate_mlp.py"


rule overlap_mlp:
    input:
        full="results/mlp/eigen/full.npz",
        history=rules.train_mlp.output.history,
    output:
        csv=report(
            "results/mlp/overlap.csv",
            caption="../report/overlap_csv.rst",
            category="Modular addition",
        ),
    log:
        "logs/mlp/overlap.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        p=MLP["p"],
        grok_threshold=MLP["grok_threshold"],
    script:
        "../scripts/overlap_mlp.py"


rule claims:
    input:
        tms="results/tms/metrics.csv",
        history=rules.train_mlp.output.history,
        layer1="results/mlp/eigen/layer1.npz",
        full="results/mlp/eigen/full.npz",
        overlap="results/mlp/overlap.csv",
        rotation="results/mlp/rotation.npz",
    output:
        csv=report(
            "results/claims.csv", caption="../report/claims.rst", category="Claims"
        ),
    log:
        "logs/claims.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        claims=config["claims"],
        p=MLP["p"],
        grok_threshold=MLP["grok_threshold"],
    script:
        "../scripts/claims.py"


rule claims_scale:
    input:
        layer1="results/scale/eigen/layer1.npz",
        full="results/scale/eigen/full.npz",
    output:
        csv=report(
            "results/scale/claims.csv",
            caption="../report/claims.rst",
            category="Scale (p = 113)",
        ),
    log:
        "logs/scale/claims.log",
    localrule: True
    conda:
        "../envs/entk.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        claims=config["claims"],
        p=SCALE["p"],
    script:
        "../scripts/claims_scale.py"
