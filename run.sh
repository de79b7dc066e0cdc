#!/usr/bin/env bash
# One entry point for a fresh machine (Python ≥ 3.11 on PATH as python3, or set PYTHON):
#   ./run.sh paper   set up .venv, then build every paper figure and the claims table
#   ./run.sh test    set up .venv, then run every test (unit, end-to-end, lint, format, dry runs)
#   ./run.sh resume  after a killed run: clear Snakemake's stale lock, rerun half-written jobs, go on;
#                    it acts on the folder it is called from (yours, if your Snakefile imports entk
#                    as a module: /path/to/entk/run.sh resume), with entk's .venv
# Extra arguments go to snakemake / pytest, e.g. ./run.sh paper --cores 8
set -euo pipefail
here=$(pwd -P)
cd "$(dirname "$0")"
entk=$(pwd -P)
PYTHON=${PYTHON:-python3}

# setup REQUIREMENTS_FILE: requirements.txt to run the workflow, requirements-dev.txt to test it
setup() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "entk needs Python ≥ 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  echo "[setup] installing pinned $1 into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$1"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
}

# Snakemake reads --configfile itself and names no line of a YAML error: check those files first.
check_configfiles() {
  local files=() take=0 a
  for a in "$@"; do
    case "$a" in
      --configfile | --configfiles) take=1 ;;
      --configfile=* | --configfiles=*) files+=("${a#*=}") ;;
      -*) take=0 ;;
      *) [ "$take" = 1 ] && files+=("$a") ;;
    esac
  done
  [ ${#files[@]} -eq 0 ] || "$entk/.venv/bin/python" -m entk.pipeline.config "${files[@]}"
}

cmd=${1:-}
shift || true
case "$cmd" in
  paper) setup requirements.txt; check_configfiles "$@"; exec .venv/bin/snakemake "$@" ;;
  test) setup requirements-dev.txt; exec .venv/bin/python -m pytest "$@" ;;
  resume)
    if [ ! -e "$here/Snakefile" ] && [ ! -e "$here/workflow/Snakefile" ] && [[ " $* " != *" -s "* ]] &&
      [[ " $* " != *" --snakefile "* ]]; then
      echo "no Snakefile in $here: run resume from the folder of the interrupted run (or pass -s)" >&2; exit 1
    fi
    # --unlock is only safe when nothing else runs there: refuse while a snakemake (or its script job) does.
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/cwd" 2>/dev/null)" = "$here" ] &&
        tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qE '(^|/)snakemake$|[.]snakemake/scripts/' &&
        { echo "process ${p#/proc/} still runs snakemake here ($here); wait for it or stop it, then resume" >&2; exit 1; }
    done
    setup requirements.txt
    cd "$here"
    check_configfiles "$@"
    echo "[resume] unlocking and rerunning incomplete jobs in $here"
    "$entk/.venv/bin/snakemake" --unlock "$@"; exec "$entk/.venv/bin/snakemake" --rerun-incomplete "$@" ;;
  *) echo "usage: ./run.sh paper|test|resume [args...]" >&2; exit 2 ;;
esac
