"""Small helpers the workflow's scripts share: devices, seeds, logs and all-or-nothing writes."""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import sys
import traceback
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

# torch is imported inside the functions that need it: light rules (CSV, tables) skip its start-up.


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


# A temp file's name: ".{target name}.tmp-{8 hex digits}{target suffix}" beside the target.
_TEMP_TAG = ".tmp-"


def _temp_name(path: Path) -> re.Pattern:
    return re.compile(re.escape(f".{path.name}{_TEMP_TAG}") + "[0-9a-f]{8}" + re.escape(path.suffix))


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files that killed writes of ``path`` left beside it; return them.

    Only one job writes a given output at a time, so any temp of ``path`` that exists before a
    write starts is from a write that never finished.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _temp_name(path)
    stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename onto it only if the block succeeds.

    The file gets the permissions of an ordinary write (0666 less the umask), and temps that an
    earlier, killed write of the same target left behind are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    while True:
        tmp = path.parent / f".{path.name}{_TEMP_TAG}{secrets.token_hex(4)}{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """``np.savez`` (uncompressed: kernels are dense floats) written all-or-nothing."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


@contextlib.contextmanager
def npy_writer(path: str | os.PathLike, shape: tuple[int, ...], dtype) -> Iterator[io.BufferedWriter]:
    """An ``.npy`` file of ``shape`` and ``dtype`` whose data the block writes in C order, piece by piece (arrays
    larger than memory can hold at once), all-or-nothing: a block that fails or writes the wrong number of bytes
    leaves no file."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        start = fh.tell()
        yield fh
        written, want = fh.tell() - start, int(np.prod(shape)) * dtype.itemsize
        if written != want:
            raise ValueError(f"{path}: {written} bytes of data written, the header's shape {shape} needs {want}")


def save_csv(path: str | os.PathLike, table) -> None:
    """A pandas table as CSV without its index, written all-or-nothing."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def save_torch(path: str | os.PathLike, obj) -> None:
    """``torch.save`` written all-or-nothing; the same object gives the same bytes at any path.

    (``torch.save`` to a path names the archive inside after the file; through a buffer it is
    always "archive".)
    """
    write_bytes(path, torch_bytes(obj))


def torch_bytes(obj) -> bytes:
    """What ``torch.save`` writes for ``obj`` (through a buffer: the archive inside is always "archive")."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Bytes written to ``path`` all-or-nothing."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# Metadata that would make two saves of one figure differ: creation dates (PDF, SVG, PS).
_NO_DATES = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "ps": {"CreationDate": None}}


def save_figure(fig, paths: list[str]) -> None:
    """Save one matplotlib figure to each path (format from the suffix), all-or-nothing each.

    The bytes depend only on the figure: no creation dates, and SVG ids from a fixed salt.
    """
    import matplotlib

    for p in paths:
        fmt = Path(p).suffix.lstrip(".")
        with atomic_path(p) as tmp, matplotlib.rc_context({"svg.hashsalt": "entk"}):
            fig.savefig(tmp, format=fmt, dpi=200, bbox_inches="tight", metadata=_NO_DATES.get(fmt))


class UnreadableFileError(OSError):
    """An input file is missing, truncated, corrupt or lacks what the reader needs; the message
    names the file and says how to rebuild it."""


REBUILD = "delete it and rerun snakemake to rebuild it"


def _unreadable(path, what: str, why: str) -> UnreadableFileError:
    return UnreadableFileError(f"{path} is not a readable {what} ({why}); {REBUILD}")


def _exists(path, what: str) -> None:
    if not Path(path).is_file():
        raise UnreadableFileError(f"{path}: the {what} is missing; rerun snakemake to build it")


# Plain values a recipe's state may hold besides tensors (numpy scalars in a history, e.g.
# np.float64 from a metric): allowed by name, so a torch file never runs code when it is loaded.
def _numpy_globals() -> list:
    scalar_types = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16, np.float32, np.float64)
    return [np._core.multiarray.scalar, np.dtype, *(type(np.dtype(t)) for t in scalar_types)]


def unsafe_globals(source) -> list[str]:
    """The Python objects (``module.name``) a torch file (path or file object) would build by running
    code when unpickled, beyond tensors, plain types and numpy scalars; empty for a safe file."""
    import torch

    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_globals()}
    return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(source) if g not in allowed]


SHOWN_GLOBALS = 5


def _not_loaded(path, names: list[str]) -> str:
    """Why a torch file that needs code to unpickle is refused, and what to save instead."""
    if any(n.startswith("torch.nn.modules.") for n in names):
        return (
            f"{path} is a whole pickled model (torch.save(model)), which is not loaded: unpickling it would run "
            "code. Save the weights instead: torch.save(model.state_dict(), path)"
        )
    shown = ", ".join(names[:SHOWN_GLOBALS]) + (", …" if len(names) > SHOWN_GLOBALS else "")
    return (
        f"{path} holds Python objects ({shown}) that are not loaded: unpickling them could run code. "
        "Save only tensors and plain types (dict, list, str, int, float), e.g. model.state_dict()"
    )


def load_torch(path: str | os.PathLike, what: str = "checkpoint", *, yours: bool = False, **kwargs):
    """``torch.load(path, weights_only=True, **kwargs)``: tensors, plain types and numpy scalars only,
    so a file planted among the results cannot run code. A bad file raises ``UnreadableFileError``
    naming it; ``yours`` marks a file of the user's, which the workflow cannot rebuild."""
    import torch

    if not Path(path).is_file():
        fix = "check the path in the config" if yours else "rerun snakemake to build it"
        raise UnreadableFileError(f"{path}: the {what} is missing; {fix}")
    if kwargs.pop("weights_only", True) is not True:
        raise ValueError("load_torch never unpickles code: weights_only must be True")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, weights_only=True, **kwargs)
    except Exception as e:  # torch raises OSError, RuntimeError, pickle and zip errors alike
        try:
            names = unsafe_globals(path)
        except Exception:  # a file too damaged to list its objects is reported as corrupt below
            names = []
        if names:
            raise UnreadableFileError(_not_loaded(path, names)) from None
        if yours:
            why = f"truncated or corrupt: {type(e).__name__}: {e}"
            raise UnreadableFileError(f"{path} is not a readable {what} ({why}); save it again") from e
        raise _unreadable(path, what, f"truncated or corrupt: {type(e).__name__}: {e}") from e


def load_npz(
    path: str | os.PathLike,
    required: Iterable[str] = (),
    shapes: dict[str, tuple[int | None, ...]] | None = None,
    what: str = "array file",
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read in full; ``UnreadableFileError`` when the file is
    truncated or corrupt, lacks a ``required`` key, or an array's shape differs from ``shapes``
    (key → shape, ``None`` for any length along that axis)."""
    _exists(path, what)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, EOFError
        raise _unreadable(path, what, f"truncated or corrupt: {type(e).__name__}: {e}") from e
    missing = [k for k in required if k not in arrays]
    if missing:
        raise _unreadable(path, what, f"no arrays {missing}; it holds {sorted(arrays)}")
    for key, shape in (shapes or {}).items():
        got = arrays[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got, strict=False)):
            want = tuple("any" if s is None else s for s in shape)
            raise _unreadable(path, what, f"array {key!r} has shape {got}, expected {want}")
    return arrays


def read_table(path: str | os.PathLike, columns: Iterable[str] = (), what: str = "table"):
    """A CSV file the workflow wrote, as a pandas DataFrame; ``UnreadableFileError`` when it is
    empty, cut off mid-line (pandas always ends a CSV with a newline), unparsable or lacks ``columns``."""
    import pandas as pd

    _exists(path, what)
    raw = Path(path).read_bytes()
    if not raw.endswith(b"\n"):
        raise _unreadable(path, what, "empty" if not raw else "truncated: the last line is cut off")
    try:
        table = pd.read_csv(io.BytesIO(raw))
    except Exception as e:  # pandas.errors.ParserError, EmptyDataError, UnicodeDecodeError
        raise _unreadable(path, what, f"corrupt: {type(e).__name__}: {e}") from e
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise _unreadable(path, what, f"no columns {missing}; it has {list(table.columns)}")
    return table


def check_history(table, expected_steps: Iterable[int], path: str | os.PathLike) -> None:
    """Raise ``UnreadableFileError`` unless the training history ``table`` (first column: the
    training axis, ``epoch`` or ``step``) has a row for every expected step."""
    axis = table.columns[0]
    expected = sorted(set(int(s) for s in expected_steps))
    missing = sorted(set(expected) - set(int(s) for s in table[axis].dropna()))
    if missing:
        shown = ", ".join(str(s) for s in missing[:10]) + (", …" if len(missing) > 10 else "")
        why = f"truncated: no rows for {len(missing)} of {len(expected)} {axis}s ({shown})"
        raise _unreadable(path, "training history", why)


def read_history(path: str | os.PathLike, steps: Iterable[int]):
    """A training history (``history.csv``) that must have a row for every checkpoint step."""
    table = read_table(path, what="training history")
    check_history(table, steps, path)
    return table


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
        """Write the checkpoint of ``epoch`` (state plus meta) and publish it to its output path; a state
        that only code could load back (``unsafe_globals``) is refused as it is saved, not on resume."""
        data = torch_bytes({**state, "meta": self.meta})
        names = unsafe_globals(io.BytesIO(data))
        if names:
            raise ValueError(
                f"the state saved at step {epoch} holds Python objects ({', '.join(names[:SHOWN_GLOBALS])}) that "
                "a resume would not load, as unpickling them could run code; save only tensors and plain types "
                "(model.state_dict(), optimizer.state_dict(), numbers, lists, dicts)"
            )
        write_bytes(self._side(epoch), data)
        self._publish(epoch)

    def load(self, epoch: int) -> dict:
        """The side checkpoint of ``epoch`` as saved."""
        return load_torch(self._side(epoch), what="side checkpoint")

    def latest(self) -> dict | None:
        """The newest side checkpoint with matching meta (earlier ones re-published), or None."""
        found = sorted(e for e in self.paths if self._side(e).exists())
        if not found:
            return None
        try:
            state = load_torch(self._side(found[-1]), what="side checkpoint")
        except UnreadableFileError as e:
            raise UnreadableFileError(f"{e}. To start the training over, delete {self.side}") from None
        if state.get("meta") != self.meta:
            saved = state.get("meta", {})
            changed = sorted(k for k in self.meta.keys() | saved.keys() if saved.get(k) != self.meta.get(k))
            print(
                f"ignoring checkpoints in {self.side}: written with other settings; starting over (changed: {changed})"
            )
            self.finish()
            return None
        for epoch in found:
            self._publish(epoch)
        print(f"resuming from the checkpoint of epoch {found[-1]} in {self.side}")
        return state

    def missing(self) -> list[int]:
        """The steps without a side checkpoint (a recipe that returned without saving them)."""
        return [e for e in self.paths if not self._side(e).exists()]

    def finish(self) -> None:
        """Drop the side folder once every output is in place."""
        shutil.rmtree(self.side, ignore_errors=True)
