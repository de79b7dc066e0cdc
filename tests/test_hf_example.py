"""The Hugging Face example (examples/hf_local) run the way a user runs it: copied to a directory of its
own, its model directories written by its script, its Snakefile importing this repository's as a
module, one `snakemake` command.

The workflow's spectra are checked against brute-force eNTKs (``torch.func`` Jacobians of the whole
model, ``eigh`` of the dense (N·C)² matrix) of the same saved directories on contexts picked here
from the example's files, and against a directory saved again after loading.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.func import functional_call, jacrev

from conftest import ROOT
from entk import lm

EXAMPLE = ROOT / "examples" / "hf_local"
STATES = {"init": 0, "step40": 40, "trained": 80}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("hf_local")
    shutil.copytree(EXAMPLE, work, dirs_exist_ok=True)
    snakefile = work / "Snakefile"
    assert '"../../Snakefile"' in snakefile.read_text(), "the example's Snakefile no longer imports ../../Snakefile"
    snakefile.write_text(snakefile.read_text().replace('"../../Snakefile"', f'"{ROOT / "Snakefile"}"'))
    spec = importlib.util.spec_from_file_location("hf_local_example", work / "make_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        module.main(work)
    finally:
        torch.set_num_threads(threads)
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "all", "results/tiny_text/lm/d0/contexts.npz"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return work


def picked(labels: list[str], classes: list[str], per_class: int) -> np.ndarray:
    """Rows of the contexts kept: a label among the classes, the first per_class of each, in file order."""
    seen = dict.fromkeys(classes, 0)
    rows = []
    for i, label in enumerate(labels):
        if label in seen and seen[label] < per_class:
            seen[label] += 1
            rows.append(i)
    return np.asarray(rows)


def brute_force_top(directory: Path, ids: torch.Tensor, block: int, k: int) -> np.ndarray:
    """Top-k eigenvalues of S^½ J Jᵀ S^½, J from jacrev of the whole model in float64, dense eigh."""
    model = lm.load_causal_lm(directory).double()
    u = lm.unembedding(model)
    f = lm.FinalHidden(model, -1, lm.metric_sqrt(u.T @ u))
    prefix = f"lm.{lm.module_for(model, 'mlp_out', block)}."
    params = {n: p.detach() for n, p in f.named_parameters() if n.startswith(prefix)}
    jac = jacrev(lambda p: functional_call(f, p, (ids,)))(params)
    j = torch.cat([jac[n].reshape(ids.shape[0] * u.shape[1], -1) for n in params], dim=1)
    return torch.linalg.eigvalsh(j @ j.T).flip(0)[:k].detach().numpy()


def example_config(work: Path) -> dict:
    return yaml.safe_load((work / "config.yaml").read_text())


@pytest.mark.slow
def test_every_output_of_the_example(workdir):
    out = workdir / "results"
    for state in STATES:
        for b in (0, 1):
            assert (out / "tiny" / "lm" / "d0" / state / "eigen" / f"mlp_out.{b}.npz").is_file(), (state, b)
    for state in ("init", "trained"):
        for name in ("detectors.csv", "lanczos.csv"):
            table = pd.read_csv(out / "tiny" / "lm" / "d0" / state / name)
            assert len(table) > 0, f"tiny/{state}/{name} is empty"
    assert not (out / "tiny_text" / "lm" / "d0" / "trained").exists(), "tiny_text is not in the default target"
    detectors = pd.read_csv(out / "tiny" / "lm" / "d0" / "trained" / "detectors.csv")
    assert set(detectors["class"]) >= {"DET", "NOUN", "VERB", "PUNCT"}


@pytest.mark.slow
def test_contexts_are_the_files_rows(workdir):
    config = example_config(workdir)
    entry = config["language_models"]["tiny"]
    labels = (workdir / "labels.txt").read_text().split()
    rows = picked(labels, entry["classes"], entry["per_class"])
    with np.load(workdir / "results" / "tiny" / "lm" / "d0" / "contexts.npz") as data:
        np.testing.assert_array_equal(data["ids"], np.load(workdir / "tokens.npy")[rows])
        assert [entry["classes"][y] for y in data["labels"]] == [labels[i] for i in rows]
    # The text input: consecutive windows of context_length words, each word its own token.
    vocab = lm.load_tokenizer(workdir / "model" / "step_80").get_vocab()
    words = (workdir / "text.txt").read_text().split()
    t = config["language_models"]["tiny_text"]["context_length"]
    windows = np.asarray([vocab[w] for w in words[: len(words) // t * t]]).reshape(-1, t)
    text_labels = (workdir / "text_labels.txt").read_text().split()
    text_rows = picked(text_labels, entry["classes"], entry["per_class"])
    with np.load(workdir / "results" / "tiny_text" / "lm" / "d0" / "contexts.npz") as data:
        np.testing.assert_array_equal(data["ids"], windows[text_rows])


@pytest.mark.slow
def test_spectra_equal_brute_force_on_every_checkpoint(workdir):
    k = example_config(workdir)["language_models"]["tiny"]["top_k"]
    with np.load(workdir / "results" / "tiny" / "lm" / "d0" / "contexts.npz") as data:
        ids = torch.from_numpy(data["ids"])
    spectra = pd.read_csv(workdir / "results" / "tiny" / "lm" / "d0" / "spectra.csv")
    for state, step in STATES.items():
        for b in (0, 1):
            with np.load(workdir / "results" / "tiny" / "lm" / "d0" / state / "eigen" / f"mlp_out.{b}.npz") as data:
                values = data["values"]
            expected = brute_force_top(workdir / "model" / f"step_{step}", ids, b, k)
            np.testing.assert_allclose(values, expected, rtol=2e-4, err_msg=f"{state} mlp_out.{b}")
            rows = spectra[(spectra["step"] == step) & (spectra["layer"] == f"mlp_out.{b}")].sort_values("index")
            np.testing.assert_allclose(rows["eigenvalue"], values, rtol=1e-6)
    phases = pd.read_csv(workdir / "results" / "tiny" / "lm" / "d0" / "phases.csv")
    assert sorted(phases["step"].unique()) == sorted(STATES.values())
    assert set(phases["layer"]) == {"mlp_out.0", "mlp_out.1"}


@pytest.mark.slow
def test_saved_then_loaded_directory_gives_the_same_spectra(workdir, tmp_path):
    with np.load(workdir / "results" / "tiny" / "lm" / "d0" / "contexts.npz") as data:
        ids = torch.from_numpy(data["ids"])
    with np.load(workdir / "results" / "tiny" / "lm" / "d0" / "trained" / "eigen" / "mlp_out.1.npz") as data:
        values = data["values"]
    lm.load_causal_lm(workdir / "model" / "step_80").save_pretrained(tmp_path / "again")
    again = lm.load_causal_lm(tmp_path / "again")
    u = lm.unembedding(again)
    op = lm.module_operator(again, ids, lm.module_for(again, "mlp_out", 1), metric_sqrt=lm.metric_sqrt(u.T @ u))
    np.testing.assert_allclose(op.eigenpairs(len(values))[0].numpy(), values, rtol=1e-4)
