# entk: every figure of J. Lin, "Feature Identification via the Empirical NTK" (arXiv:2510.00468)
# as a Snakemake target. Spec: shared/paper.md. Stages live in rules/, one file each.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/train.smk"
include: "rules/kernel.smk"
include: "rules/eigen.smk"
include: "rules/metrics.smk"
include: "rules/figures.smk"


onsuccess:
    print_claims("results/claims.csv")


rule all:
    default_target: True
    input:
        all_targets(),


rule scale:
    input:
        "results/scale/claims.csv",
        "results/scale/eigen/flatten.npz",
        expand("results/figures/fig_scale_spectra.{ext}", ext=["png", "pdf"]),
