"""Threshold + connected components, with hysteresis, hole filling and size filters in nm.

The standard for well-separated objects such as mitochondria. Order of the
steps (the same in memory and blockwise): foreground ``prob > threshold``;
with `high_threshold`, only foreground components holding a voxel
``> high_threshold`` stay (hysteresis); background components that do not
touch the volume's border and are at most `max_hole_nm3` become foreground
(hole filling); connected components; components smaller than
`min_size_nm3` are removed; ids are renumbered ``1..N`` in raster order of
each object's first voxel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emseg._checks import parse_spacing
from emseg.errors import EmsegValueError
from emseg.instance._validate import check_map, check_threshold, physical_size, to_voxels

_FULL = {3: 26, 2: 8}
_VALID = {3: (6, 18, 26), 2: (4, 8)}


def parse_connectivity(connectivity: int | None, ndim: int) -> int:
    """`connectivity` checked for `ndim` (None = full: 26 in 3D, 8 in 2D)."""
    if connectivity is None:
        return _FULL[ndim]
    if connectivity not in _VALID[ndim]:
        raise EmsegValueError(
            f"`connectivity` must be one of {_VALID[ndim]} for a {ndim}D volume; "
            f"got {connectivity!r}."
        )
    return int(connectivity)


def background_connectivity(connectivity: int, ndim: int) -> int:
    """The connectivity of the background that complements `connectivity` (26 <-> 6, 8 <-> 4)."""
    if ndim == 3:
        return 26 if connectivity == 6 else 6
    return 8 if connectivity == 4 else 4


def _cc(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    import cc3d

    labels, n = cc3d.connected_components(  # type: ignore[call-overload]
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity, return_N=True
    )
    return labels.astype(np.uint32, copy=False), int(n)


def touches_border(labels: np.ndarray, n: int) -> np.ndarray:
    """(n + 1,) bool: which ids have a voxel on the array's border."""
    hit = np.zeros(n + 1, dtype=bool)
    for axis in range(labels.ndim):
        for end in (0, -1):
            hit[np.unique(np.take(labels, end, axis=axis))] = True
    return hit


def fill_holes(mask: np.ndarray, *, max_hole_voxels: int | None, connectivity: int) -> np.ndarray:
    """`mask` with enclosed background components of at most `max_hole_voxels` set."""
    bg, n = _cc(~mask, background_connectivity(connectivity, mask.ndim))
    if n == 0:
        return mask
    sizes = np.bincount(bg.ravel(), minlength=n + 1)
    fill = ~touches_border(bg, n)
    if max_hole_voxels is not None:
        fill &= sizes <= max_hole_voxels
    fill[0] = False
    return mask | fill[bg]


def threshold_components(
    probabilities: Any,
    *,
    threshold: float = 0.5,
    high_threshold: float | None = None,
    spacing: Any = None,
    min_size_nm3: float | None = None,
    max_hole_nm3: float | None = None,
    fill_all_holes: bool = False,
    connectivity: int | None = None,
) -> np.ndarray:
    """Objects of a probability map: threshold, hysteresis, holes, components, size filter.

    Parameters
    ----------
    probabilities : (Z, Y, X) or (Y, X) ndarray of float or int, or bool mask
        Foreground probability (no NaN); a bool array is used as the
        foreground itself.
    threshold : float, default 0.5
        Foreground is ``probabilities > threshold``.
    high_threshold : float, optional
        Hysteresis: keep only foreground components with at least one voxel
        ``> high_threshold``.
    spacing : float or sequence of float, optional
        Voxel size in nm (z, y, x); 1 nm per axis by default.
    min_size_nm3 : float, optional
        Remove objects smaller than this volume in nm^3 (area in nm^2 for a
        2D image), **not** in voxels: 100 voxels at 4 x 4 x 40 nm are
        ``100 * 640 = 64000`` nm^3. A value below one voxel's volume is
        refused as a likely voxel count.
    max_hole_nm3 : float, optional
        Fill enclosed background regions (holes, not touching the image
        border) up to this volume (nm^3, or nm^2 in 2D).
    fill_all_holes : bool, default False
        Fill every enclosed hole, whatever its size.
    connectivity : {6, 18, 26} or {4, 8}, optional
        Foreground connectivity (default full: 26 / 8); holes use the
        complementary one (6 / 4).

    Returns
    -------
    labels : ndarray of uint32, same shape
        Objects ``1..N`` in raster order of their first voxel, 0 = background.

    Examples
    --------
    >>> p = np.zeros((1, 5, 9)); p[0, 1:4, 1:4] = 0.9; p[0, 2, 6] = 0.7
    >>> threshold_components(p, threshold=0.5, spacing=(40, 4, 4), min_size_nm3=2 * 640)[0]
    array([[0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=uint32)
    """
    arr = np.asarray(probabilities)
    if arr.dtype == np.bool_:
        fg = arr
        if arr.ndim not in (2, 3):
            raise EmsegValueError(f"`probabilities` must be 2D or 3D; got shape {arr.shape}.")
    else:
        arr = check_map(arr, name="probabilities")
        fg = arr > check_threshold(threshold, name="threshold")
    ndim = fg.ndim
    sp = parse_spacing(spacing, ndim)
    conn = parse_connectivity(connectivity, ndim)
    min_nm = physical_size(min_size_nm3, name="min_size_nm3", spacing=sp, ndim=ndim)
    hole_nm = physical_size(max_hole_nm3, name="max_hole_nm3", spacing=sp, ndim=ndim)
    if high_threshold is not None:
        high = check_threshold(high_threshold, name="high_threshold")
        if arr.dtype != np.bool_ and high < threshold:
            raise EmsegValueError(
                f"`high_threshold` ({high}) must be >= `threshold` ({threshold}) for hysteresis."
            )
        labels, n = _cc(fg, conn)
        strong = np.zeros(n + 1, dtype=bool)
        strong[np.unique(labels[arr > high])] = True
        strong[0] = False
        fg = strong[labels]
    if fill_all_holes or hole_nm is not None:
        fg = fill_holes(
            fg,
            max_hole_voxels=None if fill_all_holes else int(hole_nm // np.prod(sp)),  # type: ignore[operator]
            connectivity=conn,
        )
    labels, n = _cc(fg, conn)
    min_vox = to_voxels(min_nm, sp)
    if min_vox > 1 and n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= min_vox
        keep[0] = False
        lut = np.zeros(n + 1, dtype=np.uint32)
        lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
        labels = lut[labels]
    return labels
