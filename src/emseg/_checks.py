"""Validation helpers shared by every public function (one per cross-cutting rule)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np

from emseg.errors import EmsegTypeError, EmsegValueError

SpacingLike: TypeAlias = float | int | Sequence[float] | np.ndarray | None
"""A voxel size in nm: one number for every axis, or one number per axis (z, y, x)."""

Spacing: TypeAlias = tuple[float, ...]


#: Test-time augmentation: ``False`` (none), ``True`` or ``"flips"`` (all flips of the
#: network's spatial axes: 4 in 2D, 8 in 3D), ``"flips+transpose"`` (those flips of the
#: input and of its y <-> x transpose: 8 in 2D, the dihedral group of the square; 16 in 3D).
TTA = bool | Literal["flips", "flips+transpose"]


def tta_mode(tta: Any) -> Literal["off", "flips", "flips+transpose"]:
    """The test-time augmentation `tta` names: ``"off"``, ``"flips"`` or ``"flips+transpose"``.

    Raises
    ------
    EmsegValueError
        For anything but False, True, "flips" or "flips+transpose".
    """
    if tta is False:
        return "off"
    if tta is True or tta == "flips":
        return "flips"
    if tta == "flips+transpose":
        return "flips+transpose"
    raise EmsegValueError(
        f"`tta` must be False, True (= 'flips': all flips of the spatial axes) or "
        f"'flips+transpose' (those flips and the y <-> x transpose); got {tta!r}."
    )


def is_positive_number(value: Any) -> bool:
    """Whether `value` is a positive finite int or float (not a bool, not a string)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )


def parse_spacing(spacing: SpacingLike, ndim: int, *, name: str = "spacing") -> Spacing:
    """Return `spacing` as a tuple of `ndim` positive finite floats (nm, z-y-x order).

    ``None`` means 1.0 per axis. A single number is used for every axis.

    Raises
    ------
    EmsegValueError
        When the number of entries differs from `ndim` or an entry is not
        positive and finite.
    """
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, int | float | np.integer | np.floating):
        values: list[Any] = [spacing] * ndim
    else:
        try:
            values = list(spacing)
        except TypeError:
            raise EmsegTypeError(
                f"`{name}` must be a number or a sequence of numbers (nm, z-y-x); got {spacing!r}."
            ) from None
    if len(values) != ndim:
        raise EmsegValueError(
            f"`{name}` must have {ndim} entries (one per spatial axis, z-y-x order in nm); "
            f"got {tuple(values)}."
        )
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise EmsegTypeError(f"`{name}` entries must be numbers; got {v!r}.") from None
        if not math.isfinite(f) or f <= 0:
            raise EmsegValueError(
                f"`{name}` entries must be positive and finite (nm per voxel); got {tuple(values)}."
            )
        out.append(f)
    return tuple(out)


def parse_shape(
    shape: Iterable[int], *, name: str = "shape", ndim: int | None = None
) -> tuple[int, ...]:
    """Return `shape` as a tuple of positive ints, checking its length when `ndim` is given."""
    try:
        values = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise EmsegTypeError(f"`{name}` must be a sequence of integers; got {shape!r}.") from None
    if ndim is not None and len(values) != ndim:
        raise EmsegValueError(f"`{name}` must have {ndim} entries; got {values}.")
    if any(v <= 0 for v in values):
        raise EmsegValueError(f"`{name}` entries must be positive; got {values}.")
    return values


def check_same_shape(a: Any, b: Any, *, names: tuple[str, str] = ("truth", "prediction")) -> None:
    """Raise when two arrays differ in shape, naming both parameters and shapes."""
    if tuple(a.shape) != tuple(b.shape):
        raise EmsegValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def check_label_dtype(labels: Any, *, name: str = "labels") -> None:
    """Raise when `labels` is not an integer (or boolean) array."""
    dtype = np.dtype(labels.dtype)
    if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise EmsegTypeError(
            f"`{name}` must be an integer label array (0 = background); got dtype {dtype}. "
            "Threshold probabilities first or cast with .astype(np.uint32)."
        )


def check_choice(value: str, choices: Sequence[str], *, name: str) -> str:
    """Raise when `value` is not one of `choices`, listing the valid ones."""
    if value not in choices:
        raise EmsegValueError(
            f"`{name}` must be one of {', '.join(repr(c) for c in choices)}; got {value!r}."
        )
    return value
