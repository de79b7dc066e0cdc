#!/usr/bin/env bash
# Builds benchmarks/.peers-venv: the interpreter of benchmarks/peers.py (entk against
# neural-tangents and nngeometry). entk itself is not installed there: peers.py puts src/ on
# sys.path.
#
#   bash benchmarks/peers_env.sh            # (re)creates the venv, then checks the imports
#   benchmarks/.peers-venv/bin/python benchmarks/peers.py
#
# Every package is pinned exactly and installed with --no-deps, so pip resolves nothing on its own.
# Why these versions fit together:
# - torch 2.13.0 is the CPU build from this machine's disk (/opt/wheels); "+cpu" cannot come from
#   PyPI, so a missing local wheel fails here instead of pulling a CUDA build.
# - jax/jaxlib 0.4.23 and neural-tangents 0.6.5 as asked; numpy 1.26.4 (< 2, which jaxlib 0.4.23
#   was built against); scipy 1.11.4 (jax 0.4.23's jax.scipy still uses scipy.linalg names that
#   scipy 1.13 removed).
# - neural-tangents 0.6.5 imports tensorflow and tf2jax at `import neural_tangents` (its
#   experimental TF module), so both are needed even though the benchmark never calls them:
#   tensorflow 2.15.1 (NT 0.6.5 asks for >= 2.15; 2.15.1 wants numpy < 2 and ml-dtypes 0.3, which
#   jax 0.4.23 accepts) and tf2jax 0.3.5 (of NT 0.6.5's time); the rest of the list is what they
#   require.
# - nngeometry 0.4 (the newest release; it runs on torch 2.13). It declares torchvision, but no
#   module of it imports torchvision, and PyPI's torchvision wheels would be CUDA builds that want
#   a CUDA torch: it is left out on purpose (so `pip check` names it as missing).
# - pandas: entk.kinds.transformer (the Transformer model) imports it. setuptools (torch, tensorflow) and
#   wheel (astunparse, for tensorflow) are declared requirements that the venv's bundled pip
#   tools do not meet, so they are pinned too.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.peers-venv"
py="${PYTHON:-python3.11}"
wheels="${TORCH_WHEELS:-/opt/wheels}"

"$py" - <<'EOF'
import sys
if not (3, 9) <= sys.version_info[:2] <= (3, 11):
    sys.exit(f"need Python 3.9-3.11 (tensorflow 2.15 / jaxlib 0.4.23 wheels), got {sys.version.split()[0]}")
EOF
if ! ls "$wheels"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    echo "no torch-2.13.0+cpu wheel in $wheels (set TORCH_WHEELS): refusing to let pip pick a torch" >&2
    exit 1
fi

rm -rf "$venv"
"$py" -m venv "$venv"
lock="$(mktemp)"
trap 'rm -f "$lock"' EXIT
cat >"$lock" <<'EOF'
torch==2.13.0+cpu
filelock==4.3.1
fsspec==2026.9.0
Jinja2==3.1.6
MarkupSafe==3.0.4
mpmath==1.3.0
networkx==3.6.1
sympy==1.14.0
typing_extensions==4.16.0
setuptools==84.2.1
wheel==0.45.1
numpy==1.26.4
scipy==1.11.4
jax==0.4.23
jaxlib==0.4.23
ml-dtypes==0.3.2
opt_einsum==3.4.0
neural-tangents==0.6.5
frozendict==2.5.1
tf2jax==0.3.5
dm-tree==0.1.10
attrs==26.1.0
tensorflow==2.15.1
absl-py==2.5.1
astunparse==1.6.3
flatbuffers==25.12.19
gast==0.7.0
google-pasta==0.2.0
grpcio==1.85.3
h5py==3.16.0
keras==2.15.0
libclang==18.1.1
packaging==26.4
protobuf==4.25.9
six==1.17.0
tensorboard==2.15.2
tensorboard-data-server==0.7.2
google-auth==2.63.0
google-auth-oauthlib==1.5.0
oauthlib==4.0.1
requests-oauthlib==2.0.0
requests==2.34.2
certifi==2026.10.19.post1
charset-normalizer==3.5.3
idna==3.20
urllib3==2.8.0
pyasn1==0.6.5
pyasn1_modules==0.4.2
cryptography==50.0.2
cffi==2.1.1
pycparser==3.12
Markdown==3.11.3
Werkzeug==3.1.9
tensorflow-estimator==2.15.0
tensorflow-io-gcs-filesystem==0.37.1
termcolor==3.3.0
wrapt==1.14.2
nngeometry==0.4
pandas==2.2.3
python-dateutil==4.0.0
pytz==2026.6
tzdata==2026.6
EOF
"$venv/bin/pip" install --quiet --no-deps --find-links "$wheels" -r "$lock"
# Only nngeometry's torchvision (see above) may be missing.
problems="$("$venv/bin/pip" check 2>&1 | grep -v -e "^nngeometry 0.4 requires torchvision" -e "^No broken" || true)"
if [ -n "$problems" ]; then
    echo "$problems" >&2
    exit 1
fi

# The one interpreter must import all of them together.
PYTHONPATH="$here/../src" TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" - <<'EOF'
import jax, jaxlib, neural_tangents, nngeometry, numpy, pandas, scipy, tensorflow, torch
from nngeometry import GramMatrix
import entk, entk.kinds.models, entk.kinds.transformer
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
assert jnp.ones(2).dtype == jnp.float64 and torch.from_numpy(numpy.ones(2)).dtype == torch.float64
assert torch.__version__ == "2.13.0+cpu" and not torch.cuda.is_available()
from importlib.metadata import version
names = ("torch", "numpy", "scipy", "jax", "jaxlib", "neural-tangents", "nngeometry", "tensorflow", "tf2jax", "pandas")
print("peers venv OK:", ", ".join(f"{n} {version(n)}" for n in names))
EOF
