"""Binary morphology in physical units: radii in nm, sizes in nm^3 (3D) or nm^2 (2D)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from emseg._checks import parse_spacing
from emseg.errors import EmsegTypeError, EmsegValueError


def _mask(mask: Any, name: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)):
        raise EmsegTypeError(f"`{name}` must be a boolean (or 0/1 integer) mask; got {arr.dtype}.")
    if arr.ndim not in (2, 3):
        raise EmsegValueError(f"`{name}` must be 2D or 3D; got shape {arr.shape}.")
    return arr.astype(bool)


def ball(radius: float, spacing: Any) -> np.ndarray:
    """An ellipsoidal structuring element of `radius` nm on a grid of `spacing` nm.

    Examples
    --------
    >>> ball(8.0, (40.0, 4.0, 4.0)).shape
    (1, 5, 5)
    """
    sp = tuple(float(s) for s in spacing)
    if not np.isfinite(radius) or radius < 0:
        raise EmsegValueError(f"`radius` must be >= 0 nm; got {radius!r}.")
    half = [int(radius // s) for s in sp]
    grids = np.meshgrid(
        *[np.arange(-h, h + 1) * s for h, s in zip(half, sp, strict=True)], indexing="ij"
    )
    r2: np.ndarray = sum(g**2 for g in grids)
    return r2 <= radius**2 + 1e-9


def _footprint(mask: np.ndarray, radius: float, spacing: Any, per_section: bool) -> np.ndarray:
    sp = parse_spacing(spacing, mask.ndim)
    if mask.ndim == 3 and per_section:
        return ball(radius, sp[1:])[None]
    return ball(radius, sp)


def binary_opening(
    mask: Any, *, radius: float, spacing: Any = None, per_section: bool = False
) -> np.ndarray:
    """Opening by a ball of `radius` nm (removes parts thinner than ~2 radius); bool output."""
    m = _mask(mask)
    fp = _footprint(m, radius, spacing, per_section)
    return ndimage.binary_opening(m, structure=fp, border_value=0)


def binary_closing(
    mask: Any, *, radius: float, spacing: Any = None, per_section: bool = False
) -> np.ndarray:
    """Closing by a ball of `radius` nm (bridges gaps up to ~2 radius); bool output.

    The mask is padded by the radius first, so objects at the border are not
    eroded by the closing.
    """
    m = _mask(mask)
    fp = _footprint(m, radius, spacing, per_section)
    pad = [(s // 2, s // 2) for s in fp.shape]
    closed = ndimage.binary_closing(np.pad(m, pad, mode="edge"), structure=fp)
    return closed[tuple(slice(p, p + n) for (p, _), n in zip(pad, m.shape, strict=True))]


def fill_holes(mask: Any, *, per_section: bool = True) -> np.ndarray:
    """Fill holes (background not connected to the border); per z-section by default."""
    m = _mask(mask)
    if m.ndim == 3 and per_section:
        return np.stack([ndimage.binary_fill_holes(s) for s in m])
    return ndimage.binary_fill_holes(m)


def remove_small_objects(
    mask: Any, *, min_size: float, spacing: Any = None, connectivity: int = 1
) -> np.ndarray:
    """Drop connected components smaller than `min_size` nm^3 (3D) or nm^2 (2D); bool output."""
    m = _mask(mask)
    sp = parse_spacing(spacing, m.ndim)
    if min_size < 0:
        raise EmsegValueError(f"`min_size` must be >= 0 (nm^{m.ndim}); got {min_size}.")
    lab, n = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, connectivity))
    if n == 0:
        return m
    voxel = float(np.prod(sp))
    sizes = np.bincount(lab.ravel()) * voxel
    keep = sizes >= min_size
    keep[0] = False
    return keep[lab]


def remove_small_holes(
    mask: Any, *, max_size: float, spacing: Any = None, connectivity: int = 1
) -> np.ndarray:
    """Fill background components smaller than `max_size` nm^3 / nm^2; bool output."""
    m = _mask(mask)
    return ~remove_small_objects(~m, min_size=max_size, spacing=spacing, connectivity=connectivity)


def largest_component(mask: Any, *, connectivity: int = 1) -> np.ndarray:
    """The largest connected component of a mask (empty in, empty out); bool output."""
    m = _mask(mask)
    lab, n = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, connectivity))
    if n == 0:
        return m
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))
