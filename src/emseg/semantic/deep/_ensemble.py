"""Ensembles: average of models, tri-planar 2D ensembles, majority vote of class maps.

Test-time augmentation (flips) is :func:`predict_image`'s ``tta=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emseg.errors import EmsegValueError
from emseg.semantic.deep._infer import predict_image
from emseg.semantic.deep._model import Model


def predict_ensemble(models: Sequence[Model], image: Any, **kwargs: Any) -> np.ndarray:
    """Mean of several models' probabilities (same outputs), float32 (C, *image.shape).

    `kwargs` go to :func:`predict_image` (``tta``, ``tile_shape``, ...).
    """
    if not models:
        raise EmsegValueError("`models` must hold at least one model; got none.")
    names = models[0].output_names
    for i, m in enumerate(models[1:], 1):
        if m.output_names != names:
            raise EmsegValueError(
                f"`models[{i}]` predicts {m.output_names}, `models[0]` {names}: an ensemble "
                "needs the same outputs."
            )
    acc = None
    for m in models:
        p = predict_image(m, image, **kwargs)
        acc = p if acc is None else acc + p
    assert acc is not None
    return (acc / len(models)).astype(np.float32)


def predict_triplanar(model: Model, volume: Any, **kwargs: Any) -> np.ndarray:
    """A 2D model applied to the xy, xz and yz planes of a volume, averaged.

    For (roughly) isotropic volumes (FIB-SEM), as HIVE-Net and empanada do;
    ``predict_image(model, volume, planes=3, **kwargs)`` (also blockwise:
    ``predict_blockwise(..., planes=3)``).

    Parameters
    ----------
    model : Model
        A 2D network.
    volume : (Z, Y, X) array-like
    **kwargs
        For :func:`predict_image`.

    Returns
    -------
    (C, Z, Y, X) ndarray of float32
    """
    if model.dim != 2:
        raise EmsegValueError(
            f"`model` must be a 2D network for a tri-planar ensemble; got {model.dim}D."
        )
    if len(volume.shape) != 3:
        raise EmsegValueError(f"`volume` must be 3D (Z, Y, X); got shape {tuple(volume.shape)}.")
    return predict_image(model, volume, planes=3, **kwargs)


def majority_vote(class_maps: Sequence[Any]) -> np.ndarray:
    """Per-voxel most frequent class of several class maps; ties go to the smallest class.

    Returns
    -------
    ndarray of the maps' shape and dtype
    """
    maps = [np.asarray(m) for m in class_maps]
    if not maps:
        raise EmsegValueError("`class_maps` must hold at least one map; got none.")
    for i, m in enumerate(maps[1:], 1):
        if m.shape != maps[0].shape:
            raise EmsegValueError(
                f"`class_maps[{i}]` has shape {m.shape}, `class_maps[0]` {maps[0].shape}."
            )
    stack = np.stack(maps)
    n = int(stack.max()) + 1
    counts = np.stack([(stack == c).sum(axis=0) for c in range(n)])
    return np.argmax(counts, axis=0).astype(maps[0].dtype)
