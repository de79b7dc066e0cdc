"""The own-model example (examples/own_model) run the way a user runs it: copied to a directory of
its own, its Snakefile importing this repository's as a module, one `snakemake` command.

Two experiments run side by side: `toy`, the example's config as shipped (the workflow trains the
model with the example's recipe), and `mine`, the same model from state_dict files written here
with torch.save (a user's own checkpoints). The data plant four classes in three known directions,
so the test knows where the features are: the classes' indicators must fill the eNTK's top cliff.
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

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_model"
STEPS = [0, 10, 20, 50, 100]  # the example config's checkpoint steps
VIEWS = {"toy": ("diag", "flat"), "mine": ("diag",)}
TABLES = ("spectra.csv", "cliffs.csv", "localisation.csv", "phases.csv", "features.csv")
FIGURES = ("fig_spectra.png", "fig_checkpoints.png", "fig_phases.png")
# The class family (rank 3 once mean-centred) in the top cliff: 0.95 measured with seed 0.
FAMILY_MIN = 0.9


def load_example_model(directory: Path):
    """The example's model.py as a module (imported by path, as the workflow imports it)."""
    spec = importlib.util.spec_from_file_location("own_model_example", directory / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def centred_family(labels: np.ndarray) -> np.ndarray:
    """Orthonormal basis (N, C−1) of the mean-centred class indicators."""
    onehot = np.eye(labels.max() + 1)[labels]
    u, s, _ = np.linalg.svd(onehot - onehot.mean(0), full_matrices=False)
    return u[:, s > 1e-9]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("own_model")
    shutil.copytree(EXAMPLE, work, dirs_exist_ok=True)
    snakefile = work / "Snakefile"
    assert '"../../Snakefile"' in snakefile.read_text(), "the example's Snakefile no longer imports ../../Snakefile"
    snakefile.write_text(snakefile.read_text().replace('"../../Snakefile"', f'"{ROOT / "Snakefile"}"'))

    # The user's own checkpoints: the example's recipe run here with the seed and key the workflow
    # gives `toy`, one bare state_dict file per step (zero-padded, so the glob sorts by step).
    config = yaml.safe_load((work / "config.yaml").read_text())
    toy = config["experiments"]["toy"]
    model = load_example_model(work)
    (work / "ckpt").mkdir()

    def save(step, state):
        torch.save(state["model"], work / "ckpt" / f"step_{step:04d}.pt")

    model.train(
        toy["settings"],
        config["seed"],
        "toy",
        device=torch.device("cpu"),
        checkpoint_steps=STEPS,
        save_checkpoint=save,
        log=lambda _: None,
    )
    mine = {k: v for k, v in toy.items() if k != "views"}
    mine["weights"] = {"checkpoints": "ckpt/*.pt", "steps": STEPS}
    mine["views"] = {"diag": toy["views"]["diag"]}
    config["experiments"]["mine"] = mine
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2"], cwd=work, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return work


@pytest.mark.slow
def test_every_generic_output_of_every_view(workdir):
    for exp, views in VIEWS.items():
        for view in views:
            out = workdir / "results" / exp / view
            missing = [name for name in ("eigen.npz", *TABLES, *FIGURES) if not (out / name).is_file()]
            assert not missing, f"{exp}/{view}: missing {missing}"
            for name in TABLES:
                table = pd.read_csv(out / name)
                assert len(table.columns) > 0, f"{exp}/{view}/{name} has no columns"
            for name in FIGURES:
                assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{exp}/{view}/{name} is not a PNG"


@pytest.mark.slow
def test_eigen_files_follow_the_contract(workdir):
    n, classes, k = 128, 4, 20
    for exp, view, groups, steps, dim in [
        ("toy", "diag", ["full", "hidden", "readout"], STEPS, n),
        ("toy", "flat", ["hidden", "readout"], STEPS[-1:], classes * n),  # per_module, checkpoints: last
        ("mine", "diag", ["full", "hidden", "readout"], STEPS, n),
    ]:
        eig = np.load(workdir / "results" / exp / view / "eigen.npz")
        assert eig["steps"].tolist() == steps and eig["steps"].dtype == np.int64
        assert eig["groups"].tolist() == groups
        assert eig["inputs"].shape == (n, 8)
        assert int(eig["n_outputs"]) == classes and int(eig["n_samples"]) == n
        assert str(eig["outputs"]) == ("flatten" if view == "flat" else "diag_mean")
        for g in groups:
            values, vectors = eig[f"values/{g}"], eig[f"vectors/{g}"]
            assert values.shape == (len(steps), k) and vectors.shape == (len(steps), dim, k)
            assert np.all(np.diff(values, axis=1) <= 0), f"{exp}/{view}/{g}: eigenvalues not descending"
            gram = np.einsum("tdi,tdj->tij", vectors, vectors)
            assert np.allclose(gram, np.eye(k), atol=1e-8), f"{exp}/{view}/{g}: eigenvectors not orthonormal"
        assert set(eig["params/hidden"]) == {"hidden.weight", "hidden.bias"}


@pytest.mark.slow
def test_planted_classes_fill_the_top_cliff(workdir):
    labels = np.load(workdir / "labels.npy")
    family = centred_family(labels)
    eig = np.load(workdir / "results" / "toy" / "diag" / "eigen.npz")

    # Independently of the workflow's cliff rule: the constant and the three planted directions are
    # the top 4 eigenvectors, at every checkpoint, and they hold the classes.
    values, vectors = eig["values/full"], eig["vectors/full"]
    for t, step in enumerate(STEPS):
        captured = np.sum((vectors[t, :, :4].T @ family) ** 2) / family.shape[1]
        assert captured >= FAMILY_MIN, f"step {step}: top 4 eigenvectors hold {captured:.3f} of the class family"
    # Training deepens the cliff after them (λ4/λ5: 4.2 at initialisation, 6.5 at step 100).
    gaps = values[:, 3] / values[:, 4]
    assert gaps[-1] > 1.3 * gaps[0], f"λ4/λ5 over training: {gaps.round(2).tolist()}"

    # The workflow's own table says the same: the full kernel's first cliff holds the family and
    # no later cliff holds much of it.
    features = pd.read_csv(workdir / "results" / "toy" / "diag" / "features.csv")
    last = features[
        (features["step"] == STEPS[-1]) & (features["layer"] == "full") & (features["feature"] == "(family)")
    ].sort_values("position")
    assert len(last) >= 1 and last["position"].iloc[0] <= 4, last.to_string()
    assert last["overlap"].iloc[0] >= FAMILY_MIN, last.to_string()
    assert (last["overlap"].iloc[1:] <= 0.1).all(), last.to_string()


@pytest.mark.slow
def test_user_checkpoints_give_the_trained_runs_eigenpairs(workdir):
    trained = np.load(workdir / "results" / "toy" / "diag" / "eigen.npz")
    imported = np.load(workdir / "results" / "mine" / "diag" / "eigen.npz")
    assert imported["steps"].tolist() == trained["steps"].tolist()
    for g in trained["groups"]:
        np.testing.assert_allclose(imported[f"values/{g}"], trained[f"values/{g}"], rtol=1e-5)
        # Compare the top 4 only: lower eigenvalues lie close together, so their vectors may rotate.
        np.testing.assert_allclose(imported[f"vectors/{g}"][:, :, :4], trained[f"vectors/{g}"][:, :, :4], atol=1e-4)


def test_labels_file_holds_the_probe_inputs_classes():
    model = load_example_model(EXAMPLE)
    x, labels = model.probe()
    assert np.array_equal(np.load(EXAMPLE / "labels.npy"), labels.numpy())
    assert torch.equal(model.inputs(), x)
    # The classes are the clusters: each point is nearest its own class centre in the planted directions.
    nearest = torch.cdist(x[:, :3], model.CORNERS).argmin(1)
    assert (nearest == labels).float().mean() > 0.95
