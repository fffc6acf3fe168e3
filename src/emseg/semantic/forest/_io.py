"""Model files that cannot run code: safetensors arrays + JSON metadata + a checksum.

A model file is a `safetensors <https://huggingface.co/docs/safetensors>`_
file (an 8-byte header length, a JSON header, raw little-endian arrays):

- tensors ``stage{k}.{left,right,feature,threshold,value,roots}``: the trees
  of stage k (see :class:`PackedForest`);
- header metadata ``format = "emseg.forest"``, ``format_version``,
  ``model`` (JSON: feature spec, class names, spacing, context scales,
  provenance) and ``sha256`` (of the metadata JSON and every tensor's name,
  dtype, shape and bytes).

Loading parses JSON and copies numbers, nothing else: no pickle, no imports
named by the file. A file that is not safetensors (e.g. a renamed pickle),
names another format, fails its checksum (changed bytes) or holds trees whose
indices leave the arrays is refused with :class:`~emseg.errors.FormatError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from emseg.errors import DatasetNotFoundError, FormatError, OutputExistsError
from emseg.features import FeatureSpec
from emseg.semantic.forest._model import PixelClassifier
from emseg.semantic.forest._packed import PackedForest

FORMAT = "emseg.forest"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 2**20


def _digest(model_json: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(model_json.encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_model(
    model: PixelClassifier, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write `model` to a safetensors file (see module docstring); return the path.

    Raises
    ------
    OutputExistsError
        When `path` exists and `overwrite` is False.
    """
    from safetensors.numpy import save_file

    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(
            f"the model file {str(p)!r} exists; pass overwrite=True (--overwrite) or another path."
        )
    tensors: dict[str, np.ndarray] = {}
    for k, stage in enumerate(model.stages):
        for name, arr in stage.arrays().items():
            tensors[f"stage{k}.{name}"] = np.ascontiguousarray(arr)
    meta = {
        "spec": model.spec.to_dict(),
        "class_names": list(model.class_names),
        "spacing": list(model.spacing),
        "context_scales": list(model.context_scales),
        "n_stages": len(model.stages),
        "n_features": [s.n_features for s in model.stages],
        "provenance": model.provenance,
    }
    model_json = json.dumps(meta, sort_keys=True)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model": model_json,
        "sha256": _digest(model_json, tensors),
    }
    tmp = p.with_name(f".{p.name}.partial")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, p)
    return p


def _read_header(p: Path) -> None:
    """Refuse anything that does not start like a safetensors file."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise FormatError(f"{str(p)!r} is not an emseg model file (too short: {size} bytes).")
    (n,) = struct.unpack("<Q", head[:8])
    if n > min(size - 8, _MAX_HEADER) or head[8:9] != b"{":
        raise FormatError(
            f"{str(p)!r} is not an emseg model file (no safetensors header; pickle / joblib "
            "files are never loaded because loading them can run code). Retrain with "
            "`emseg forest train`."
        )


def load_model(path: str | os.PathLike[str]) -> PixelClassifier:
    """Read a model written by :func:`save_model`, without executing anything from the file.

    Raises
    ------
    DatasetNotFoundError
        When `path` does not exist.
    FormatError
        When the file is not a safetensors file, names another format or
        version, fails its checksum, or holds inconsistent trees.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError(f"model file {str(p)!r} does not exist.")
    _read_header(p)
    try:
        with safe_open(str(p), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, ValueError, OSError) as exc:
        raise FormatError(f"{str(p)!r} is not a readable model file: {exc}.") from None
    if metadata.get("format") != FORMAT:
        raise FormatError(
            f"{str(p)!r} is a safetensors file but not an emseg forest model "
            f"(format={metadata.get('format')!r}, expected {FORMAT!r})."
        )
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise FormatError(
            f"{str(p)!r} has model format version {metadata.get('format_version')!r}; this emseg "
            f"reads version {FORMAT_VERSION}. Retrain the model or use a matching emseg."
        )
    model_json = metadata.get("model", "")
    if _digest(model_json, tensors) != metadata.get("sha256"):
        raise FormatError(
            f"{str(p)!r} fails its checksum: the file was changed or damaged after it was "
            "written. Retrain or restore the model."
        )
    try:
        meta: dict[str, Any] = json.loads(model_json)
        spec = FeatureSpec.from_dict(meta["spec"])
        n_stages = int(meta["n_stages"])
        stages = tuple(
            PackedForest.from_arrays(
                {
                    name: tensors[f"stage{k}.{name}"]
                    for name in ("left", "right", "feature", "threshold", "value", "roots")
                    if f"stage{k}.{name}" in tensors
                },
                int(meta["n_features"][k]),
            )
            for k in range(n_stages)
        )
        model = PixelClassifier(
            spec=spec,
            stages=stages,
            class_names=tuple(str(c) for c in meta["class_names"]),
            spacing=tuple(float(s) for s in meta["spacing"]),
            context_scales=tuple(float(s) for s in meta["context_scales"]),
            provenance=dict(meta.get("provenance", {})),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{str(p)!r} has invalid model metadata: {exc!r}.") from None
    for k, stage in enumerate(model.stages):
        if stage.n_classes != model.n_classes or stage.n_features != model.n_stage_features(k):
            raise FormatError(
                f"{str(p)!r}: stage {k} has {stage.n_classes} classes and {stage.n_features} "
                f"features; the metadata implies {model.n_classes} and {model.n_stage_features(k)}."
            )
    return model
