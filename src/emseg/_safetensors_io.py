"""Files that cannot run code: safetensors arrays + a JSON metadata string + a checksum.

The one file layout behind the forest pixel-classifier files
(:mod:`emseg.semantic.forest`) and the edge-classifier files
(:mod:`emseg.instance`): a `safetensors <https://huggingface.co/docs/safetensors>`_
file whose header metadata holds ``format``, ``format_version``, ``model`` (a
JSON string the caller defines) and ``sha256`` (:func:`digest` of that JSON and
every tensor's name, dtype, shape and bytes).

:func:`write_checked` writes one atomically (a hidden ``.partial`` file, then
``os.replace``); :func:`read_checked` reads one back, parsing JSON and copying
numbers only (no pickle, no imports named by the file), and refuses with
:class:`~emseg.errors.FormatError` a file that is not safetensors (e.g. a
renamed pickle), names another format or version, or fails its checksum.
What the JSON and the tensors mean is checked by the caller.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emseg.errors import DatasetNotFoundError, FormatError, OutputExistsError

_MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class CheckedFile:
    """What :func:`read_checked` returns.

    Attributes
    ----------
    tensors : dict of str to ndarray
        Every tensor of the file, by name.
    meta_json : str
        The ``model`` metadata string (JSON, checked against the checksum).
    """

    tensors: dict[str, np.ndarray]
    meta_json: str


def digest(meta_json: str, tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of `meta_json` and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(meta_json.encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_writable(path: str | os.PathLike[str], *, what: str, overwrite: bool) -> Path:
    """Return `path` as a Path; raise OutputExistsError when it exists and not `overwrite`."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(
            f"the {what} file {str(p)!r} exists; pass overwrite=True (--overwrite) or another path."
        )
    return p


def write_checked(
    path: str | os.PathLike[str],
    tensors: dict[str, np.ndarray],
    *,
    meta_json: str,
    fmt: str,
    version: int,
) -> Path:
    """Write `tensors` and `meta_json` with their checksum to `path` (atomically).

    Parameters
    ----------
    path : path-like
        The file to write (replaced if it exists; check with
        :func:`check_writable` first).
    tensors : dict of str to ndarray
        The arrays to store.
    meta_json : str
        JSON text stored as the ``model`` metadata entry.
    fmt, version : str, int
        Stored as ``format`` and ``format_version``.

    Returns
    -------
    Path
        The path written.
    """
    from safetensors.numpy import save_file

    p = Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    metadata = {
        "format": fmt,
        "format_version": str(version),
        "model": meta_json,
        "sha256": digest(meta_json, arrays),
    }
    tmp = p.with_name(f".{p.name}.partial")
    save_file(arrays, str(tmp), metadata=metadata)
    os.replace(tmp, p)
    return p


def _check_header(p: Path, *, what: str, fix: str) -> None:
    """Refuse anything that does not start like a safetensors file."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise FormatError(f"{str(p)!r} is not an {what} file (too short: {size} bytes).")
    (n,) = struct.unpack("<Q", head[:8])
    if n > min(size - 8, _MAX_HEADER) or head[8:9] != b"{":
        raise FormatError(
            f"{str(p)!r} is not an {what} file (no safetensors header; pickle / joblib files "
            f"are never loaded because loading them can run code). {fix}"
        )


def read_checked(
    path: str | os.PathLike[str], *, fmt: str, version: int, what: str, fix: str
) -> CheckedFile:
    """Read a file written by :func:`write_checked` and verify format, version and checksum.

    Parameters
    ----------
    path : path-like
        The file to read.
    fmt, version : str, int
        The ``format`` and ``format_version`` the file must carry.
    what : str
        What the file is, for messages (e.g. ``"emseg forest model"``).
    fix : str
        The sentence that ends a refusal (e.g. how to retrain).

    Returns
    -------
    CheckedFile
        The tensors and the ``model`` JSON string.

    Raises
    ------
    DatasetNotFoundError
        When `path` does not exist.
    FormatError
        When the file is not safetensors, names another format or version, or
        fails its checksum.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError(f"{what} file {str(p)!r} does not exist.")
    _check_header(p, what=what, fix=fix)
    try:
        with safe_open(str(p), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, ValueError, OSError) as exc:
        raise FormatError(f"{str(p)!r} is not a readable {what} file: {exc}.") from None
    if metadata.get("format") != fmt:
        raise FormatError(
            f"{str(p)!r} is a safetensors file but not an {what} "
            f"(format={metadata.get('format')!r}, expected {fmt!r})."
        )
    if metadata.get("format_version") != str(version):
        raise FormatError(
            f"{str(p)!r} has {what} format version {metadata.get('format_version')!r}; this "
            f"emseg reads version {version}. {fix}"
        )
    meta_json = metadata.get("model", "")
    if digest(meta_json, tensors) != metadata.get("sha256"):
        raise FormatError(
            f"{str(p)!r} fails its checksum: the file was changed or damaged after it was "
            f"written. {fix}"
        )
    return CheckedFile(tensors=tensors, meta_json=meta_json)
