"""Atomic outputs: write into a hidden sibling, move it into place only when complete.

A writer calls :func:`check_output` before any work (an existing output is an
error unless ``overwrite``), then writes inside :func:`atomic_output`. The
partial output lives at ``<dir>/.<name>.partial-<pid>-<uuid>``; it becomes
``<dir>/<name>`` with one ``os.replace`` at the very end, so an exception or a
kill midway never leaves anything at the final path. With ``overwrite`` the
old output is moved aside only after the new one is complete, then deleted.
Partial siblings left by processes that no longer run are removed by the next
write of the same name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from emseg.errors import OutputExistsError

logger = logging.getLogger(__name__)

_PARTIAL = ".partial-"


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Return `path` as a Path; raise when it exists and `overwrite` is False.

    Raises
    ------
    OutputExistsError
        When `path` exists and `overwrite` is False.
    """
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"the output {str(p)!r} exists; pass overwrite=True (CLI: --overwrite) to replace it, "
            "or choose another path."
        )
    return p


def partial_siblings(path: str | os.PathLike[str]) -> list[Path]:
    """The partial outputs of `path` (complete or not) that lie beside it."""
    p = Path(path)
    prefix = f".{p.name}{_PARTIAL}"
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        return []
    return sorted(c for c in parent.iterdir() if c.name.startswith(prefix))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale_partials(path: str | os.PathLike[str]) -> int:
    """Delete partial siblings of `path` whose writing process has ended; return how many."""
    removed = 0
    for c in partial_siblings(path):
        tail = c.name.rsplit(_PARTIAL, 1)[-1]
        try:
            pid = int(tail.split("-", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            logger.info("removing the stale partial output %s", c)
            _remove(c)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write into; move it to `path` on success.

    On an exception the temporary output is deleted and the exception
    propagates; `path` is untouched. With `overwrite`, an existing `path` is
    replaced only after the new output is complete.

    Raises
    ------
    OutputExistsError
        When `path` exists and `overwrite` is False (checked again at the end,
        in case another process created it meanwhile).
    """
    final = check_output(path, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(final)
    tmp = final.parent / f".{final.name}{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():  # the body wrote nothing: nothing to move
        return
    old: Path | None = None
    if final.exists() or final.is_symlink():
        if not overwrite:
            _remove(tmp)
            check_output(final, overwrite=False)
        old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:  # put the previous output back
            os.replace(old, final)
        raise
    if old is not None:
        _remove(old)
