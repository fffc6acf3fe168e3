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

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from emseg._safetensors_io import check_writable, read_checked, write_checked
from emseg._safetensors_io import digest as _digest  # noqa: F401 (the tests forge files)
from emseg.errors import FormatError
from emseg.features import FeatureSpec
from emseg.semantic.forest._model import PixelClassifier
from emseg.semantic.forest._packed import PackedForest

FORMAT = "emseg.forest"
FORMAT_VERSION = 1
_WHAT = "emseg forest model"
_FIX = "Retrain with `emseg forest train` or restore the file."


def save_model(
    model: PixelClassifier, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write `model` to a safetensors file (see module docstring); return the path.

    Raises
    ------
    OutputExistsError
        When `path` exists and `overwrite` is False.
    """
    p = check_writable(path, what="model", overwrite=overwrite)
    tensors: dict[str, np.ndarray] = {}
    for k, stage in enumerate(model.stages):
        for name, arr in stage.arrays().items():
            tensors[f"stage{k}.{name}"] = arr
    meta = {
        "spec": model.spec.to_dict(),
        "class_names": list(model.class_names),
        "spacing": list(model.spacing),
        "context_scales": list(model.context_scales),
        "n_stages": len(model.stages),
        "n_features": [s.n_features for s in model.stages],
        "provenance": model.provenance,
    }
    return write_checked(
        p, tensors, meta_json=json.dumps(meta, sort_keys=True), fmt=FORMAT, version=FORMAT_VERSION
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
    p = Path(path)
    checked = read_checked(p, fmt=FORMAT, version=FORMAT_VERSION, what=_WHAT, fix=_FIX)
    tensors, model_json = checked.tensors, checked.meta_json
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
