# entk: eNTK feature discovery as a workflow, and every figure of J. Lin, "Feature Identification
# via the Empirical NTK" (arXiv:2510.00468; docs/spec.md). Experiments are config entries; the
# stages live in rules/, one file each.
from snakemake.utils import min_version

min_version("9.0")


include: "rules/config.smk"


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/train.smk"
include: "rules/eigen.smk"
include: "rules/analysis.smk"
include: "rules/paper.smk"
include: "rules/lm.smk"


onsuccess:
    print_claims("results/claims.csv")
    print_seed_claims("results/paper/seed_claims.csv")


rule all:
    default_target: True
    input:
        all_targets(),


rule scale:
    input:
        generic_outputs([PAPER["scale"]["experiment"]] if "scale" in PAPER else []),
        "results/paper/scale_claims.csv",
        expand("results/figures/fig_scale_spectra.{ext}", ext=["png", "pdf"]),


rule seeds:
    input:
        seed_study_outputs,


rule lm:
    input:
        lm_outputs([PAPER["lm"]["experiment"]] if "lm" in PAPER else []),
        ["results/paper/lm_claims.csv"] if "lm" in PAPER else [],
        expand(
            "results/figures/fig_lm_detectors.{ext}",
            ext=["png", "pdf"] if "lm" in PAPER else [],
        ),
