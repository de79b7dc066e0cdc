"""The Python sources pass ruff's lint rules and are ruff-formatted (settings in pyproject.toml)."""

import ast
import subprocess
import sys

import pytest

from conftest import ROOT

PATHS = ["src", "scripts", "tests", "benchmarks", "examples"]


@pytest.mark.parametrize(
    "command",
    [["check", "--no-fix", "--output-format", "concise"], ["format", "--check", "--diff"]],
    ids=["lint", "format"],
)
def test_ruff_clean(command):
    # The ruff of the running environment (pinned in requirements-dev.txt), not whatever is on PATH.
    run = subprocess.run([sys.executable, "-m", "ruff", *command, *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"ruff {' '.join(command)}:\n{run.stdout}{run.stderr}"


# The layers of src/entk (issue 19): which packages a module of each may import. ``pipeline`` and
# the package root may import every layer; ``shared`` none. A kind may load models through the public
# LM API (``lm``, itself on the kernel library) and check labels with the torch-free analyses.
LAYER_IMPORTS = {
    "shared": set(),
    "core": {"core", "shared"},
    "kinds": {"kinds", "core", "shared", "lm", "analyses"},
    "analyses": {"analyses", "shared"},
    "figures": {"figures", "analyses", "shared"},
    "lm": {"core", "shared"},
}


def _entk_imports(path):
    """The entk layers a source file imports, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "entk":
            parts = node.module.split(".")
            found |= {alias.name for alias in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("entk.")}
            found |= {"*" for a in node.names if a.name == "entk"}
    return found


def test_each_layer_imports_only_the_layers_below():
    src = ROOT / "src" / "entk"
    wrong = []
    for path in sorted(src.rglob("*.py")):
        layer = path.relative_to(src).parts[0].removesuffix(".py")
        if layer in LAYER_IMPORTS:
            extra = _entk_imports(path) - LAYER_IMPORTS[layer] - {layer}
            wrong += [f"{path.relative_to(ROOT)} imports entk.{name}" for name in sorted(extra)]
    assert not wrong, "\n".join(wrong)


def _import_all_without(blocked: list[str], packages: list[str], modules: list[str]) -> subprocess.CompletedProcess:
    code = (
        "import importlib, pkgutil, sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        f"names = {modules!r}\n"
        f"for pkg in {packages!r}:\n"
        "    p = importlib.import_module(pkg)\n"
        "    names += [m.name for m in pkgutil.walk_packages(p.__path__, pkg + '.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)


def test_analyses_and_figures_packages_are_torch_free():
    run = _import_all_without(["torch"], ["entk.analyses", "entk.figures"], ["entk.shared"])
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) >= 16  # every module was imported: the walk found the packages' modules


def test_what_snakemake_parses_needs_neither_torch_nor_numpy():
    parse_time = ["entk.pipeline.config", "entk.pipeline.experiments", "entk.pipeline.lm_config"]
    run = _import_all_without(["torch", "numpy"], [], ["entk", *parse_time])
    assert run.returncode == 0, run.stderr
