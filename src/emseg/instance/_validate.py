"""Input checks shared by the instance-segmentation functions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from emseg._checks import check_label_dtype, parse_spacing
from emseg.errors import EmsegTypeError, EmsegValueError


def check_map(data: Any, *, name: str, ndims: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Return a probability / boundary / distance map as a numpy array, checked.

    Raises a :class:`EmsegTypeError` for non-numeric data and a
    :class:`EmsegValueError` for NaN / inf values or a wrong number of axes.
    """
    arr = np.asarray(data)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "uif":
        raise EmsegTypeError(
            f"`{name}` must be a numeric (float or integer) map; got dtype {arr.dtype}. "
            "Pass the probability map itself, not a mask or labels."
        )
    if arr.ndim not in ndims:
        raise EmsegValueError(
            f"`{name}` must have {' or '.join(str(n) for n in ndims)} axes (z, y, x or y, x); "
            f"got shape {arr.shape}."
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise EmsegValueError(
            f"`{name}` holds {n} NaN or infinite values; fill them first "
            "(e.g. np.nan_to_num(prob, nan=0.0)) or mask them out."
        )
    return arr


def check_labels(
    labels: Any, *, name: str = "labels", ndims: tuple[int, ...] = (2, 3)
) -> np.ndarray:
    """Return an integer label array (0 = background), checked."""
    arr = np.asarray(labels)
    check_label_dtype(arr, name=name)
    if arr.ndim not in ndims:
        raise EmsegValueError(
            f"`{name}` must have {' or '.join(str(n) for n in ndims)} axes; got shape {arr.shape}."
        )
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise EmsegValueError(f"`{name}` must not hold negative ids; got min {int(arr.min())}.")
    return arr


def check_threshold(value: Any, *, name: str) -> float:
    """A finite float threshold."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise EmsegTypeError(f"`{name}` must be a number; got {value!r}.") from None
    if not math.isfinite(f):
        raise EmsegValueError(f"`{name}` must be finite; got {value!r}.")
    return f


def voxel_volume(spacing: tuple[float, ...]) -> float:
    """Volume (nm^3) or area (nm^2) of one voxel."""
    return float(math.prod(spacing))


def physical_size(
    value: Any, *, name: str, spacing: Any, ndim: int, allow_none: bool = True
) -> float | None:
    """Check a size in physical units (nm^3 in 3D, nm^2 in 2D).

    A size is a float >= 0 in nm^3 (nm^2). A size in voxels is a common
    mistake; it is caught when it is smaller than one voxel's volume (it
    would then remove nothing), e.g. ``min_size_nm3=100`` at 4 x 4 x 40 nm
    (640 nm^3 per voxel).
    """
    if value is None:
        if allow_none:
            return None
        raise EmsegValueError(f"`{name}` is required (in nm^{ndim}).")
    if isinstance(value, bool):
        raise EmsegTypeError(f"`{name}` must be a number in nm^{ndim}; got {value!r}.")
    f = check_threshold(value, name=name)
    if f < 0:
        raise EmsegValueError(f"`{name}` must be >= 0 (nm^{ndim}); got {value!r}.")
    unit = voxel_volume(parse_spacing(spacing, ndim))
    if 0 < f < unit:
        raise EmsegValueError(
            f"`{name}`={value!r} is smaller than one voxel ({unit:g} nm^{ndim} at spacing "
            f"{tuple(parse_spacing(spacing, ndim))} nm), so it would do nothing. It is a size in "
            f"nm^{ndim}, not in voxels: for N voxels pass N * {unit:g}."
        )
    return f


def to_voxels(size_nm: float | None, spacing: tuple[float, ...]) -> int:
    """Smallest voxel count whose physical size is >= `size_nm` (0 for None)."""
    if size_nm is None or size_nm <= 0:
        return 0
    return math.ceil(size_nm / voxel_volume(spacing) - 1e-9)
