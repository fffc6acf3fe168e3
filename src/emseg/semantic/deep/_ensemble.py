"""Ensembles: average of models, tri-planar 2D ensembles, majority vote of class maps.

Test-time augmentation is :func:`predict_image`'s ``tta`` (flips, or flips
and the y <-> x transpose). An ensemble whose members each have their own
``planes`` / ``tta`` / ``weight`` (e.g. a 2D network predicted tri-planar and
a 3D network) is a sequence of :class:`Member`, predicted by
:func:`predict_members` in memory and by
:func:`emseg.semantic.deep.predict_blockwise` block by block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emseg._checks import TTA, is_positive_number, tta_mode
from emseg.errors import EmsegValueError
from emseg.semantic.deep._infer import (
    Precision,
    plane_orientations,
    predict_image,
    weighted_add,
    weighted_mean,
)
from emseg.semantic.deep._model import Model


@dataclass(frozen=True, eq=False)
class Member:
    """One model of an ensemble with how it is predicted.

    Attributes
    ----------
    model : Model
    planes : {1, 3}, default 1
        As for :func:`predict_image` (3: tri-planar, 2D networks on 3D images only).
    tta : {False, True, "flips", "flips+transpose"}, default False
        As for :func:`predict_image` (True = "flips").
    weight : float, default 1
        The member's weight in the ensemble's mean, ``sum(w_i p_i) / sum(w_i)``
        (positive; e.g. 2, 1, 1 gives one model half the vote and two others a
        quarter each).
    """

    model: Model
    planes: int = 1
    tta: TTA = False
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, Model):
            raise EmsegValueError(
                f"`Member.model` must be a Model (emseg.semantic.deep.load_model); "
                f"got {type(self.model).__name__}."
            )
        plane_orientations(self.planes)
        if self.planes == 3 and self.model.dim != 2:
            raise EmsegValueError(
                f"`Member.planes`=3 (tri-planar) needs a 2D network; {member_name(self.model)!r} "
                f"is {self.model.dim}D. Use planes=1."
            )
        tta_mode(self.tta)
        w = self.weight
        if not is_positive_number(w):
            raise EmsegValueError(
                f"`Member.weight` must be a positive finite number (its share of the "
                f"ensemble's mean is weight / sum of weights); got {w!r}."
            )

    @property
    def name(self) -> str:
        """The model's name (its provenance ``name``, else its config's)."""
        return member_name(self.model)

    def describe(self) -> dict[str, Any]:
        """``{"model": name, "planes": planes, "tta": tta}`` and ``"weight"`` if not 1
        (provenance, listings)."""
        out: dict[str, Any] = {"model": self.name, "planes": self.planes, "tta": self.tta}
        if self.weight != 1:
            out["weight"] = float(self.weight)
        return out


def member_name(model: Model) -> str:
    return str(model.provenance.get("name", model.config.name))


def check_members(members: Sequence[Member]) -> tuple[Member, ...]:
    """`members` as a tuple, checked: at least one, same outputs, same training spacing.

    Raises
    ------
    EmsegValueError
        Naming the members that differ and the fix.
    """
    if isinstance(members, Member):
        members = [members]
    out = tuple(members)
    if not out:
        raise EmsegValueError(
            "`members` must hold at least one Member(model, planes=, tta=); got none."
        )
    for i, m in enumerate(out):
        if not isinstance(m, Member):
            raise EmsegValueError(
                f"`members[{i}]` must be a Member(model, planes=, tta=); got {type(m).__name__}."
            )
    first = out[0]
    for i, m in enumerate(out[1:], 1):
        if m.model.output_names != first.model.output_names:
            raise EmsegValueError(
                f"`members[{i}]` ({m.name}) predicts {m.model.output_names}, `members[0]` "
                f"({first.name}) {first.model.output_names}: an ensemble averages the same "
                "outputs; use models trained for the same classes."
            )
        a, b = tuple(first.model.spacing), tuple(m.model.spacing)
        if len(a) != len(b) or not np.allclose(a, b, rtol=1e-6, atol=0.0):
            raise EmsegValueError(
                f"`members[{i}]` ({m.name}) was trained at spacing {b} nm, `members[0]` "
                f"({first.name}) at {a} nm: an ensemble needs one training spacing; use "
                "models trained at the same voxel size."
            )
    return out


def predict_members(
    members: Sequence[Member],
    image: Any,
    *,
    tile_shape: Sequence[int] | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    precision: Precision = "fp32",
    channels_last: bool = True,
    device: Any = "auto",
) -> np.ndarray:
    """Weighted mean of the members' probabilities, each predicted with its own planes / tta.

    Exactly ``sum(w_i * p_i) / sum(w_i)`` in float32, in member order (with all
    weights 1: ``sum(p_i) / n``), where ``p_i`` is ``predict_image(member.model,
    image, planes=member.planes, tta=member.tta, ...)`` and ``w_i`` its weight.

    Parameters
    ----------
    members : sequence of Member
        Same output names and training spacing (checked).
    image : (Z, Y, X) or (Y, X) array-like
        Raw grey levels (each model applies its own normalisation).
    tile_shape, overlap, batch_size, precision, channels_last, device
        As for :func:`predict_image`, the same for every member.

    Returns
    -------
    (C, Z, Y, X) or (C, Y, X) ndarray of float32
    """
    ms = check_members(members)
    acc: np.ndarray | None = None
    for m in ms:
        p = predict_image(
            m.model,
            image,
            tile_shape=tile_shape,
            overlap=overlap,
            batch_size=batch_size,
            tta=m.tta,
            precision=precision,
            channels_last=channels_last,
            planes=m.planes,
            device=device,
        )
        acc = weighted_add(acc, p, m.weight)
    assert acc is not None
    return weighted_mean(acc, [m.weight for m in ms])


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
