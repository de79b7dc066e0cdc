"""Workflow helpers: all-or-nothing writes and checkpoints that survive a killed training job."""

import pytest
import torch

from entk import shared as wf
from entk.kinds.models import ModMLP, modadd_inputs, modadd_labels, modadd_split
from entk.kinds.training import train_modadd


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with wf.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


class Killed(Exception):
    pass


def train(tmp_path, kill_at=None, meta=None):
    gen = torch.Generator().manual_seed(0)
    model = ModMLP(7, 16, generator=gen)
    train_idx, test_idx = modadd_split(7, 0.7, gen)
    epochs = [0, 10, 20, 30, 40]
    store = wf.ResumableCheckpoints(
        {e: tmp_path / "out" / f"epoch{e}.pt" for e in epochs}, tmp_path / "side", meta or {"seed": 0}
    )

    def save(epoch, state):
        if epoch == kill_at:
            raise Killed
        store.save(epoch, state)

    history = train_modadd(
        model,
        modadd_inputs(7),
        modadd_labels(7),
        train_idx,
        test_idx,
        epochs=40,
        lr=0.05,
        weight_decay=0.01,
        checkpoint_epochs=epochs,
        save_checkpoint=save,
        resume=store.latest(),
        log=lambda s: None,
    )
    store.finish()
    return model, history


def test_killed_training_resumes_to_identical_weights(tmp_path, capsys):
    reference, ref_history = train(tmp_path / "ref")
    with pytest.raises(Killed):
        train(tmp_path / "run", kill_at=30)
    # Snakemake deletes a failed job's outputs; the side folder keeps the checkpoints.
    for f in (tmp_path / "run" / "out").iterdir():
        f.unlink()
    resumed, history = train(tmp_path / "run")
    assert "resuming from the checkpoint of epoch 20" in capsys.readouterr().out
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=False):
        assert torch.equal(a, b)
    assert history.equals(ref_history)
    assert sorted(f.name for f in (tmp_path / "run" / "out").iterdir()) == [f"epoch{e}.pt" for e in (0, 10, 20, 30, 40)]
    assert not (tmp_path / "run" / "side").exists()


def test_changed_settings_start_over(tmp_path, capsys):
    with pytest.raises(Killed):
        train(tmp_path, kill_at=30, meta={"seed": 0})
    train(tmp_path, meta={"seed": 1})
    assert "written with other settings; starting over" in capsys.readouterr().out
