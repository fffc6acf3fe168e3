"""The journal of a resumable job: which blocks are done, with which parameters.

A journal is a folder (``<out>/.emseg-journal`` by default) holding

- ``params.json``: the job's parameters, written when the job starts; a job
  resumed with other parameters is refused;
- ``<stage>/<block id>``: one tiny file per finished block of each stage,
  written atomically (to a temporary name, then renamed) *after* the block's
  chunks are written. Its content is the block's summary (``.npy`` bytes) or
  empty.

Only the existence of a finished block's file matters: a block whose file is
missing is redone on resume. Because writes are chunk-aligned and
deterministic, redoing a half-written block is idempotent.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emseg.errors import EmsegValueError

JOURNAL_NAME = ".emseg-journal"


def _canonical(params: dict[str, Any]) -> dict[str, Any]:
    """`params` after a JSON round trip (tuples become lists, keys strings)."""
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Journal:
    """Records the finished blocks of a job in a folder (see module docstring).

    Parameters
    ----------
    path : str or Path
        The journal folder. It is created by :meth:`start`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    @property
    def exists(self) -> bool:
        return (self.path / "params.json").exists()

    def params(self) -> dict[str, Any]:
        """The parameters stored when the job started."""
        return json.loads((self.path / "params.json").read_text())

    def start(self, params: dict[str, Any], *, resume: bool) -> None:
        """Begin (or, with `resume`, continue) the job described by `params`.

        Raises
        ------
        EmsegValueError
            When resuming a journal written for different parameters.
        """
        new = _canonical(params)
        if resume and self.exists:
            old = self.params()
            if old != new:
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                detail = "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in diff)
                raise EmsegValueError(
                    f"cannot resume: the output was started with different parameters ({detail}). "
                    "Rerun with the original parameters, or pass overwrite=True (--overwrite) to "
                    "start again."
                )
            return
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        _atomic_write(self.path / "params.json", json.dumps(new, sort_keys=True).encode())

    def mark_done(self, stage: str, block_id: int, summary: Any = None) -> None:
        """Record that `block_id` of `stage` is finished, with its summary (or None).

        Call it only after the block's chunks are written: the record is what
        a resumed job trusts. The stage's folder is created by the first
        record that finds it missing (one ``mkdir`` per stage and process,
        not one per block); the journal keeps no state about it, so a copy
        sent to another process, or a journal restarted with :meth:`start`,
        stays right.
        """
        data = b""
        if summary is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(summary), allow_pickle=False)
            data = buf.getvalue()
        target = self.path / stage / str(int(block_id))
        try:
            _atomic_write(target, data)
        except FileNotFoundError:
            # the stage's first record: make its folder (not the journal's, which start()
            # made: a journal removed under a running job is an error, as before)
            target.parent.mkdir(exist_ok=True)
            _atomic_write(target, data)

    def done(self, stage: str) -> set[int]:
        """The ids of the finished blocks of `stage`."""
        p = self.path / stage
        if not p.exists():
            return set()
        return {int(name) for name in os.listdir(p) if name.isdigit()}

    def summary(self, stage: str, block_id: int) -> np.ndarray | None:
        """The summary saved with a finished block (None when it had none)."""
        data = (self.path / stage / str(int(block_id))).read_bytes()
        if not data:
            return None
        return np.load(io.BytesIO(data), allow_pickle=False)

    def iter_summaries(self, stage: str) -> Iterator[tuple[int, np.ndarray | None]]:
        for bid in sorted(self.done(stage)):
            yield bid, self.summary(stage, bid)

    def scratch(self, name: str) -> Path:
        """A folder inside the journal for temporary data (removed with it)."""
        p = self.path / "scratch" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def complete(self) -> bool:
        """Whether the job finished (then only ``params.json`` and ``complete`` remain)."""
        return (self.path / "complete").exists()

    def finish(self) -> None:
        """Mark the job complete and drop the per-block records and scratch data."""
        _atomic_write(self.path / "complete", b"")
        for child in self.path.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)

    def remove(self) -> None:
        """Delete the journal."""
        shutil.rmtree(self.path, ignore_errors=True)


def temporary_journal() -> Journal:
    """A journal in a fresh temporary folder (for outputs that have no folder)."""
    return Journal(Path(tempfile.mkdtemp(prefix="emseg-job-")) / JOURNAL_NAME)
