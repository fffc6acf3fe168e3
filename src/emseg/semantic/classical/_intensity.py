"""Intensity normalisation for EM: robust percentiles and CLAHE, per section or global."""

from __future__ import annotations

from typing import Any

import numpy as np

from emseg._checks import parse_spacing
from emseg.errors import EmsegValueError
from emseg.features import check_image


def _sections(arr: np.ndarray, per_section: bool) -> list[tuple[Any, ...]]:
    if arr.ndim == 3 and per_section:
        return [(z,) for z in range(arr.shape[0])]
    return [()]


def normalize_percentiles(
    image: Any,
    *,
    low: float = 1.0,
    high: float = 99.0,
    per_section: bool = True,
    clip: bool = True,
) -> np.ndarray:
    """Map the `low` / `high` percentiles of each section (or of the volume) to 0 / 1.

    Robust to a few saturated or dead pixels, and per section it removes the
    section-to-section brightness and contrast drift of serial-section EM.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array_like
        Grey levels.
    low, high : float
        Percentiles (0..100, ``low < high``).
    per_section : bool, default True
        Normalise each z-section on its own (3D input); else the volume at once.
    clip : bool, default True
        Clip the result to [0, 1].

    Returns
    -------
    ndarray of float32, shape of `image`
        A section whose percentiles coincide (flat section) becomes 0.

    Examples
    --------
    >>> img = np.arange(101, dtype=np.uint8).reshape(1, 101)
    >>> out = normalize_percentiles(img, low=10, high=90)
    >>> float(out[0, 10]), float(out[0, 50]), float(out[0, 90])
    (0.0, 0.5, 1.0)
    """
    arr = check_image(image)
    if not 0 <= low < high <= 100:
        raise EmsegValueError(
            f"`low` and `high` must satisfy 0 <= low < high <= 100; got low={low}, high={high}."
        )
    out = np.empty(arr.shape, np.float32)
    for key in _sections(arr, per_section):
        sec = arr[key].astype(np.float32)
        lo, hi = np.percentile(sec, [low, high])
        scale = np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(0.0)
        res = (sec - np.float32(lo)) * scale
        out[key] = np.clip(res, 0.0, 1.0) if clip else res
    return out


def clahe(
    image: Any,
    *,
    spacing: Any = None,
    kernel_size: float | None = None,
    clip_limit: float = 0.01,
    per_section: bool = True,
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (scikit-image), tiles in nm.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array_like
        Grey levels; first scaled to [0, 1] by the 0.1 / 99.9 percentiles of
        each section (CLAHE needs a known range).
    spacing : sequence of float, optional
        Voxel size in nm (1.0 per axis by default).
    kernel_size : float, optional
        Tile edge in nm (per in-plane axis); default 1/8 of the section's
        extent, as scikit-image.
    clip_limit : float, default 0.01
        As :func:`skimage.exposure.equalize_adapthist`.
    per_section : bool, default True
        2D CLAHE of each z-section (3D input); else 3D CLAHE.

    Returns
    -------
    ndarray of float32 in [0, 1], shape of `image`
    """
    from skimage.exposure import equalize_adapthist

    arr = check_image(image)
    sp = parse_spacing(spacing, arr.ndim)
    norm = normalize_percentiles(arr, low=0.1, high=99.9, per_section=per_section)
    out = np.empty(arr.shape, np.float32)
    for key in _sections(arr, per_section):
        sec = norm[key]
        sec_sp = sp[len(key) :]
        ks = None
        if kernel_size is not None:
            if kernel_size <= 0:
                raise EmsegValueError(f"`kernel_size` must be positive nm; got {kernel_size}.")
            ks = tuple(max(2, round(kernel_size / s)) for s in sec_sp)
        out[key] = equalize_adapthist(sec, kernel_size=ks, clip_limit=clip_limit).astype(np.float32)
    return out
