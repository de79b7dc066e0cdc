# Read before the `configfile:` directive: config.yaml checked strictly, so a syntax error or a
# duplicate key names the file and line. The workflow and every job import entk as an installed
# package: ./run.sh installs it into .venv (pip install -e .), and with --sdm conda each env's
# post-deploy script installs it from this checkout.
import os
import sys

try:
    import entk
except ModuleNotFoundError as err:
    raise ModuleNotFoundError(
        f"entk is not installed in the Python that runs snakemake ({sys.executable}): run ./run.sh paper "
        "from the entk checkout, or pip install -e /path/to/entk in this environment"
    ) from err

# current_basedir (this file's folder), not basedir: used as a module, basedir is the user's folder.
ENTK_SRC = os.path.normpath(
    os.path.join(str(workflow.current_basedir), "..", "src", "entk")
)
if os.path.dirname(os.path.realpath(entk.__file__)) != os.path.realpath(ENTK_SRC):
    print(
        f"warning: the installed entk ({os.path.dirname(entk.__file__)}) is not this checkout's "
        f"({ENTK_SRC}); its jobs run that code (pip install -e this checkout to run this one)",
        file=sys.stderr,
    )

from entk.pipeline.config import load_yaml_strict

if os.path.exists("config.yaml"):
    load_yaml_strict("config.yaml")
