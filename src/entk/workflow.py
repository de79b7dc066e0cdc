"""Small helpers the workflow's scripts share: devices, seeds, logs and all-or-nothing writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import traceback
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# torch is imported inside the functions that need it: light rules (CSV, tables) skip its start-up.


def torch_dtype(name: str):
    """'float32' | 'float64' → the torch dtype."""
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def resolve_device(name: str):
    """'auto' → CUDA when available else CPU; 'cuda' without a GPU is an error that says so."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device: cuda but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(name)


def generator(seed: int, *keys: str):
    """A CPU ``torch.Generator`` seeded from the global seed and stable keys (e.g. a model id)."""
    import torch

    mixed = seed
    for key in keys:
        mixed = zlib.crc32(key.encode(), mixed)
    return torch.Generator().manual_seed(int(mixed))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename onto it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """``np.savez`` (uncompressed: kernels are dense floats) written all-or-nothing."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def save_torch(path: str | os.PathLike, obj) -> None:
    """``torch.save`` written all-or-nothing."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_figure(fig, paths: list[str]) -> None:
    """Save one matplotlib figure to each path (format from the suffix), all-or-nothing each."""
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=Path(p).suffix.lstrip("."), dpi=200, bbox_inches="tight")


@contextlib.contextmanager
def logged(log_path: str | os.PathLike) -> Iterator[None]:
    """Send stdout and stderr (progress, warnings, tracebacks) to the rule's log file."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        try:
            yield
        except BaseException:
            traceback.print_exc(file=fh)
            raise


def set_threads(n: int) -> None:
    """Match torch's intra-op threads to the job's ``threads:`` so parallel jobs do not oversubscribe."""
    import torch

    torch.set_num_threads(max(1, int(n)))
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stdout)


class ResumableCheckpoints:
    """Checkpoints that survive a killed job: each is written to a side folder that Snakemake does
    not manage, then hard-linked (or copied) to its declared output path.

    ``paths`` maps epoch → output path (None: kept in the side folder only, for a caller that
    bundles them itself; ``load`` reads one back); ``meta`` (e.g. the training config and seed) must match
    for a side checkpoint to be resumed from, so a changed config starts over.
    """

    def __init__(self, paths: dict[int, str], side_dir: str | os.PathLike, meta: dict):
        self.paths, self.side, self.meta = paths, Path(side_dir), meta

    def _side(self, epoch: int) -> Path:
        return self.side / f"epoch{epoch}.pt"

    def _publish(self, epoch: int) -> None:
        if self.paths[epoch] is None:
            return
        out = Path(self.paths[epoch])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        try:
            os.link(self._side(epoch), out)
        except OSError:
            shutil.copyfile(self._side(epoch), out)

    def save(self, epoch: int, state: dict) -> None:
        """Write the checkpoint of ``epoch`` (state plus meta) and publish it to its output path."""
        save_torch(self._side(epoch), {**state, "meta": self.meta})
        self._publish(epoch)

    def load(self, epoch: int) -> dict:
        """The side checkpoint of ``epoch`` as saved."""
        import torch

        return torch.load(self._side(epoch), weights_only=False)

    def latest(self) -> dict | None:
        """The newest side checkpoint with matching meta (earlier ones re-published), or None."""
        import torch

        found = sorted(e for e in self.paths if self._side(e).exists())
        if not found:
            return None
        state = torch.load(self._side(found[-1]), weights_only=False)
        if state.get("meta") != self.meta:
            print(f"ignoring checkpoints in {self.side}: written with other settings; starting over")
            self.finish()
            return None
        for epoch in found:
            self._publish(epoch)
        print(f"resuming from the checkpoint of epoch {found[-1]} in {self.side}")
        return state

    def finish(self) -> None:
        """Drop the side folder once every output is in place."""
        shutil.rmtree(self.side, ignore_errors=True)
