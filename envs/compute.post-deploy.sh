#!/usr/bin/env bash
# Snakemake runs this once in the freshly created conda env (--sdm conda): install entk from the
# checkout this file belongs to, so the env's jobs import the package. Snakemake runs a local
# workflow's script from its own path; a workflow imported from a remote git module gets a temporary
# copy instead and needs entk installed in the env by hand (pip install -e /path/to/entk).
set -euo pipefail
python -m pip install --no-deps -e "$(cd "$(dirname "$0")/.." && pwd)"
