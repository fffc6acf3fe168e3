"""Tiling geometry of tiled prediction, as small pure functions.

The tile grid is *global*: it depends only on the volume's shape, the tile
shape and the overlap, never on which part of the volume is being predicted.
Tile starts along an axis of `size` voxels are ``0, stride, 2 stride, ...``
plus one last tile flush with the end (``size - tile``) when the regular
grid does not reach it, with ``stride = max(1, round(tile * (1 - overlap)))``.
An axis shorter than the tile has a single tile at 0 (the input is padded).
A block of a blockwise job predicts exactly the global tiles that touch its
write region, so its voxels are blended from the same tiles as in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from emseg.errors import EmsegValueError


def tile_stride(tile: int, overlap: float) -> int:
    """Step between tile starts for a tile of `tile` voxels and an overlap fraction.

    Examples
    --------
    >>> tile_stride(64, 0.25)
    48
    >>> tile_stride(64, 0.0)
    64
    """
    if not 0.0 <= overlap < 1.0:
        raise EmsegValueError(f"`overlap` must be a fraction in [0, 1); got {overlap!r}.")
    if tile < 1:
        raise EmsegValueError(f"`tile` must be >= 1; got {tile!r}.")
    return max(1, round(tile * (1.0 - overlap)))


def tile_starts(size: int, tile: int, overlap: float) -> tuple[int, ...]:
    """Start of every tile along one axis of `size` voxels (the global grid).

    Examples
    --------
    >>> tile_starts(100, 64, 0.25)
    (0, 36)
    >>> tile_starts(200, 64, 0.25)
    (0, 48, 96, 136)
    >>> tile_starts(30, 64, 0.25)
    (0,)
    """
    stride = tile_stride(tile, overlap)
    if size <= tile:
        return (0,)
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return tuple(starts)


def tile_grid(
    shape: Sequence[int], tile_shape: Sequence[int], overlap: float | Sequence[float]
) -> tuple[tuple[int, ...], ...]:
    """Tile starts per axis for a volume of `shape` (see :func:`tile_starts`)."""
    ov = _per_axis(overlap, len(shape))
    if len(tile_shape) != len(shape):
        raise EmsegValueError(
            f"`tile_shape` must have {len(shape)} entries (one per axis); got {tuple(tile_shape)}."
        )
    return tuple(
        tile_starts(int(s), int(t), o) for s, t, o in zip(shape, tile_shape, ov, strict=True)
    )


def _per_axis(value: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    if isinstance(value, int | float):
        return (float(value),) * ndim
    out = tuple(float(v) for v in value)
    if len(out) != ndim:
        raise EmsegValueError(f"`overlap` must have {ndim} entries; got {out}.")
    return out


def starts_touching(starts: Sequence[int], tile: int, lo: int, hi: int) -> tuple[int, ...]:
    """The starts whose tile ``[s, s + tile)`` intersects ``[lo, hi)``.

    Examples
    --------
    >>> starts_touching((0, 48, 96, 136), 64, 100, 120)
    (48, 96)
    """
    return tuple(s for s in starts if s < hi and s + tile > lo)


def tiles_for_region(
    grid: Sequence[Sequence[int]],
    tile_shape: Sequence[int],
    begin: Sequence[int],
    end: Sequence[int],
) -> list[tuple[int, ...]]:
    """Starts (C order) of the global tiles that intersect the box ``[begin, end)``."""
    per_axis = [
        starts_touching(g, t, lo, hi)
        for g, t, lo, hi in zip(grid, tile_shape, begin, end, strict=True)
    ]
    return [tuple(s) for s in itertools.product(*per_axis)]


def read_box(
    tiles: Sequence[Sequence[int]], tile_shape: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bounding box ``(begin, end)`` of `tiles`, clipped to the volume `shape`."""
    begin = tuple(min(t[a] for t in tiles) for a in range(len(shape)))
    end = tuple(min(max(t[a] for t in tiles) + tile_shape[a], shape[a]) for a in range(len(shape)))
    return begin, end


def blend_halo(tile_shape: Sequence[int]) -> tuple[int, ...]:
    """Context a block needs on each side so that it holds every tile touching it: ``tile - 1``."""
    return tuple(max(0, int(t) - 1) for t in tile_shape)


def gaussian_importance(tile_shape: Sequence[int], *, sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian blending weights of one tile (as nnU-Net and MONAI), float32, max 1.

    ``sigma = sigma_scale * tile`` per axis, centred on the tile; values are
    clipped below at the smallest positive value so that every voxel has a
    weight (an axis of length 1 has weight 1).

    Returns
    -------
    ndarray of float32, shape `tile_shape`
    """
    if sigma_scale <= 0:
        raise EmsegValueError(f"`sigma_scale` must be > 0; got {sigma_scale!r}.")
    w = np.ones((), dtype=np.float64)
    for t in tile_shape:
        t = int(t)
        if t == 1:
            g = np.ones(1)
        else:
            x = np.arange(t, dtype=np.float64) - (t - 1) / 2.0
            g = np.exp(-0.5 * (x / (sigma_scale * t)) ** 2)
        w = np.multiply.outer(w, g)
    w = w / w.max()
    positive = w[w > 0]
    w = np.maximum(w, positive.min())
    return w.astype(np.float32)


def check_tile_shape(
    tile_shape: Sequence[int], divisors: Sequence[int], *, name: str = "tile_shape"
) -> tuple[int, ...]:
    """Raise unless every tile side is a positive multiple of the network's divisor."""
    tiles = tuple(int(t) for t in tile_shape)
    if len(tiles) != len(divisors):
        raise EmsegValueError(f"`{name}` must have {len(divisors)} entries; got {tiles}.")
    for t, d in zip(tiles, divisors, strict=True):
        if t < 1 or t % d:
            fix = tuple(max(d, (tt // d) * d) for tt, d in zip(tiles, divisors, strict=True))
            raise EmsegValueError(
                f"`{name}` entries must be positive multiples of the network's downsampling "
                f"factors {tuple(divisors)}; got {tiles}. Try {fix}."
            )
    return tiles
