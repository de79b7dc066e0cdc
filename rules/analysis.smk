# The generic analyses: light, torch-free jobs on the submit host (localrule) in the analysis env,
# on one core with the profile's default-resources unless a rule says otherwise.


rule analyse:
    input:
        unpack(analysis_inputs),
    output:
        spectra="results/{experiment}/{view}/spectra.csv",
        cliffs="results/{experiment}/{view}/cliffs.csv",
        localisation="results/{experiment}/{view}/localisation.csv",
        phases="results/{experiment}/{view}/phases.csv",
        features="results/{experiment}/{view}/features.csv",
        detectors="results/{experiment}/{view}/detectors.csv",
        fig_spectra="results/{experiment}/{view}/fig_spectra.png",
        fig_checkpoints="results/{experiment}/{view}/fig_checkpoints.png",
        fig_phases="results/{experiment}/{view}/fig_phases.png",
    log:
        "logs/{experiment}/{view}/analyse.log",
    benchmark:
        "results/benchmarks/{experiment}/{view}/analyse.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    resources:
        runtime=10,  # one pass per checkpoint and layer group
    params:
        experiment="{experiment}",
        view="{view}",
        cliffs=config.get("cliffs", {}),
    script:
        "../scripts/analyse.py"


rule spectra_table:
    input:
        expand(
            "results/{ev}/spectra.csv",
            ev=[f"{e}/{v}" for e in DEFAULT_EXPERIMENTS for v in EXPERIMENTS[e].views],
        ),
    output:
        csv=report(
            "results/spectra.csv",
            caption="../report/spectra_csv.rst",
            category="Experiments",
        ),
    log:
        "logs/spectra_table.log",
    benchmark:
        "results/benchmarks/spectra_table.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/concat_csv.py"
