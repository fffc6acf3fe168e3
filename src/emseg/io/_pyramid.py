"""Multiscale pyramids: which axes to halve at each level, and the downsampling kernels.

Two kernels, both by windows of 1 or 2 voxels per axis (a window that runs
past the edge of an odd-sized axis uses the voxels that exist):

- :func:`downsample_mean` for images: the mean of each window, rounded back
  to the input dtype for integers (no rescaling of intensities);
- :func:`downsample_mode` for label volumes: the most frequent label of each
  window, ties going to the smallest label, so no new id is ever invented.

:func:`plan_levels` chooses the factors per level for anisotropic data: an
axis is halved only while its spacing is below twice the finest spacing, so
a 40 x 4 x 4 nm stack is first downsampled in y and x only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emseg.errors import EmsegTypeError, EmsegValueError


@dataclass(frozen=True)
class Level:
    """One level of a pyramid.

    Attributes
    ----------
    shape : tuple of int
        Shape of the level (all axes, channels included).
    spacing : tuple of float
        Voxel size in nm of the spatial axes, z-y-x.
    factors : tuple of int
        Downsampling factor (1 or 2) per axis from the previous level
        (all ones for level 0).
    translation : tuple of float
        Position in nm of the first voxel's centre relative to level 0's first
        voxel centre, per spatial axis (half the growth of the voxel size).
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    factors: tuple[int, ...]
    translation: tuple[float, ...]


def plan_levels(
    shape: Sequence[int],
    *,
    spacing: Sequence[float],
    axes: str,
    chunks: Sequence[int],
    min_size: int = 32,
    max_levels: int = 12,
) -> tuple[Level, ...]:
    """Plan the levels of a pyramid, level 0 first.

    At each level, a spatial axis is halved when it has more than `min_size`
    voxels and its spacing is below twice the finest spacing (among the axes
    longer than one voxel);
    the channel axis is never downsampled. Planning stops when the level fits
    in one chunk, when no axis can be halved, or after `max_levels` levels.

    Parameters
    ----------
    shape : sequence of int
        Shape of level 0 (all axes).
    spacing : sequence of float
        Voxel size of level 0 in nm, one entry per spatial axis (z-y-x).
    axes : str
        Axis letters of `shape`, e.g. ``"zyx"`` or ``"czyx"``.
    chunks : sequence of int
        Chunk shape (all axes).
    min_size, max_levels : int
        See above.

    Returns
    -------
    tuple of Level
        At least level 0.

    Examples
    --------
    >>> levels = plan_levels((256, 4096, 4096), spacing=(40, 4, 4), axes="zyx",
    ...                      chunks=(64, 128, 128))
    >>> [lv.factors for lv in levels[1:]]
    [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    >>> levels[-1].shape, levels[-1].spacing
    ((64, 128, 128), (160.0, 128.0, 128.0))
    """
    shape = tuple(int(s) for s in shape)
    spatial = [i for i, a in enumerate(axes) if a in "zyx"]
    if len(spacing) != len(spatial):
        raise EmsegValueError(
            f"`spacing` must have {len(spatial)} entries for axes {axes!r}; got {tuple(spacing)}."
        )
    sp0 = [float(s) for s in spacing]
    levels = [Level(shape, tuple(sp0), (1,) * len(shape), (0.0,) * len(spatial))]
    cur_shape, cur_sp = list(shape), list(sp0)
    while len(levels) < max_levels:
        live = [k for k, i in enumerate(spatial) if cur_shape[i] > 1]
        if not live:
            break
        finest = min(cur_sp[k] for k in live)
        halve = [k for k in live if cur_sp[k] < 2 * finest]
        # go on while an axis to halve is still larger than a chunk and than min_size
        if not any(
            cur_shape[spatial[k]] > max(int(chunks[spatial[k]]), 1)
            and cur_shape[spatial[k]] >= min_size
            for k in halve
        ):
            break
        factors = [1] * len(shape)
        for k in halve:
            factors[spatial[k]] = 2
        cur_shape = [math.ceil(n / f) for n, f in zip(cur_shape, factors, strict=True)]
        cur_sp = [s * factors[i] for s, i in zip(cur_sp, spatial, strict=True)]
        translation = tuple((s - s0) / 2 for s, s0 in zip(cur_sp, sp0, strict=True))
        levels.append(Level(tuple(cur_shape), tuple(cur_sp), tuple(factors), translation))
    return tuple(levels)


def _as3d(data: np.ndarray, factors: Sequence[int]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """View an array of up to 4 axes as (batch*z, y, x)-compatible 3D windows.

    Returns the array reshaped to 4D (lead, z, y, x) and the z-y-x factors;
    a leading axis must have factor 1.
    """
    if data.ndim > 4 or data.ndim < 1:
        raise EmsegValueError(f"downsampling supports 1 to 4 axes; got shape {data.shape}.")
    pad = 4 - data.ndim
    arr = data.reshape((1,) * pad + data.shape)
    f = (1,) * pad + tuple(int(x) for x in factors)
    if f[0] != 1:
        raise EmsegValueError("the leading (channel) axis of a 4D array cannot be downsampled.")
    return arr, (f[1], f[2], f[3])


def _out_shape(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, ...]:
    return tuple(math.ceil(n / f) for n, f in zip(shape, factors, strict=True))


def _check_factors(data: np.ndarray, factors: Sequence[int]) -> tuple[int, ...]:
    f = tuple(int(x) for x in factors)
    if len(f) != data.ndim or any(x not in (1, 2) for x in f):
        raise EmsegValueError(
            f"`factors` must have one entry of 1 or 2 per axis of the data (shape {data.shape}); "
            f"got {tuple(factors)}."
        )
    return f


def downsample_mean(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Average windows of `factors` voxels (1 or 2 per axis).

    Parameters
    ----------
    data : (..., Y, X) ndarray
        Up to 4 axes; a 4th (leading, channel) axis must have factor 1.
    factors : sequence of int
        1 or 2 per axis.

    Returns
    -------
    ndarray, same dtype as `data`
        Shape ``ceil(n / f)`` per axis. Means are computed in float64; integer
        outputs are rounded to the nearest integer (half to even). Integers
        above 2**53 lose precision.
    """
    f = _check_factors(data, factors)
    dtype = data.dtype
    if dtype == np.bool_:
        raise EmsegTypeError("`data` is boolean; pass labels=True (mode) or cast to uint8 first.")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise EmsegTypeError(f"`data` must be integer or floating point; got dtype {dtype}.")
    src, (fz, fy, fx) = _as3d(np.ascontiguousarray(data), f)
    out = np.empty(_out_shape(src.shape, (1, fz, fy, fx)), dtype=dtype)
    from emseg.io._pyramid_kernels import mean_kernel

    mean_kernel(src, out, fz, fy, fx, bool(np.issubdtype(dtype, np.integer)))
    return out.reshape(_out_shape(data.shape, f))


def downsample_mode(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Most frequent label of windows of `factors` voxels (1 or 2 per axis).

    Parameters
    ----------
    data : (..., Y, X) ndarray of int or bool
        Label volume; up to 4 axes, a 4th (leading) axis must have factor 1.
    factors : sequence of int
        1 or 2 per axis.

    Returns
    -------
    ndarray, same dtype as `data`
        Shape ``ceil(n / f)`` per axis. Each voxel is the label that occurs
        most often in its window; a tie goes to the smallest label. Every
        output value occurs in `data`.
    """
    f = _check_factors(data, factors)
    if not (np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_):
        raise EmsegTypeError(
            f"label downsampling needs an integer label array; got dtype {data.dtype}."
        )
    work = data.view(np.uint8) if data.dtype == np.bool_ else data
    src, (fz, fy, fx) = _as3d(np.ascontiguousarray(work), f)
    out = np.empty(_out_shape(src.shape, (1, fz, fy, fx)), dtype=src.dtype)
    from emseg.io._pyramid_kernels import mode_kernel

    mode_kernel(src, out, fz, fy, fx)
    out = out.reshape(_out_shape(data.shape, f))
    return out.view(np.bool_) if data.dtype == np.bool_ else out
