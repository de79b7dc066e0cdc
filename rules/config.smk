# Read before the `configfile:` directive: the library's path for every job, and config.yaml
# checked strictly, so a syntax error or a duplicate key names the file and line.
import os
import sys

# current_basedir (this file's folder), not basedir: used as a module, basedir is the user's folder.
ENTK_SRC = os.path.normpath(os.path.join(str(workflow.current_basedir), "..", "src"))
sys.path.insert(0, ENTK_SRC)
# The library is imported from the checkout, so rules need no `pip install` inside their conda
# envs; PYTHONPATH carries it into every job (local, conda or cluster).
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (ENTK_SRC, os.getenv("PYTHONPATH")) if p)
)

from entk.pipeline.config import load_yaml_strict

if os.path.exists("config.yaml"):
    load_yaml_strict("config.yaml")
