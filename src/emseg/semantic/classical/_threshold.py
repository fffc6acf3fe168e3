"""Thresholds: global (Otsu, Li) and local (adaptive, window in nm)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from emseg._checks import check_choice, parse_spacing
from emseg.errors import EmsegValueError
from emseg.features import check_image

Method = Literal["otsu", "li", "local"]
Polarity = Literal["bright", "dark"]


def threshold_value(image: Any, *, method: Literal["otsu", "li"] = "otsu") -> float:
    """The global Otsu or Li threshold of an image (scikit-image's)."""
    from skimage.filters import threshold_li, threshold_otsu

    check_choice(method, ("otsu", "li"), name="method")
    arr = check_image(image)
    return float(threshold_otsu(arr) if method == "otsu" else threshold_li(arr))


def threshold(
    image: Any,
    *,
    method: Method = "otsu",
    polarity: Polarity = "bright",
    spacing: Any = None,
    window: float | None = None,
    offset: float = 0.0,
    per_section: bool = True,
) -> np.ndarray:
    """Foreground mask by a global or local threshold.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array_like
        Grey levels.
    method : {"otsu", "li", "local"}
        Otsu / Li on the whole image, or scikit-image's local (Gaussian
        weighted mean) threshold in a window of `window` nm.
    polarity : {"bright", "dark"}
        Foreground is above (bright) or below (dark) the threshold.
    spacing : sequence of float, optional
        Voxel size in nm (for `window`).
    window : float, optional
        Local window edge in nm (odd voxel count); required for ``"local"``.
    offset : float, default 0
        Subtracted from the local threshold (as scikit-image).
    per_section : bool, default True
        Local thresholds per z-section (2D windows) for 3D input.

    Returns
    -------
    ndarray of bool, shape of `image`
    """
    from skimage.filters import threshold_local

    check_choice(method, ("otsu", "li", "local"), name="method")
    check_choice(polarity, ("bright", "dark"), name="polarity")
    arr = check_image(image)
    if method != "local":
        t: Any = threshold_value(arr, method=method)
    else:
        if window is None or window <= 0:
            raise EmsegValueError(
                f"`window` (nm) must be positive for method='local'; got {window!r}."
            )
        sp = parse_spacing(spacing, arr.ndim)
        img = arr.astype(np.float32)
        if arr.ndim == 3 and per_section:
            bs = [_odd(window / s) for s in sp[1:]]
            t = np.stack([threshold_local(sec, bs, offset=offset, mode="reflect") for sec in img])
        else:
            t = threshold_local(img, [_odd(window / s) for s in sp], offset=offset, mode="reflect")
    return arr > t if polarity == "bright" else arr < t


def _odd(v: float) -> int:
    n = max(3, round(v))
    return n if n % 2 else n + 1


def local_window_halo(
    window: float, spacing: tuple[float, ...], per_section: bool
) -> tuple[int, ...]:
    """Halo (voxels) that makes a blockwise local threshold exact: half the Gaussian window
    support of scikit-image (sigma = (size - 1) / 6, truncate 4)."""
    sizes = [_odd(window / s) for s in spacing]
    halo = [int(4.0 * (n - 1) / 6.0 + 0.5) for n in sizes]
    if len(spacing) == 3 and per_section:
        halo[0] = 0
    return tuple(halo)
