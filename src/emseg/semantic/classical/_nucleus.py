"""A learning-free nucleus recipe in the spirit of Karabağ et al. (2019).

Karabağ, C. et al. "Segmentation and modelling of the nuclear envelope of
HeLa cells imaged with serial block face scanning electron microscopy",
J. Imaging 5 (2019) 75: low-pass filter, Canny edges, dilation of the edges
(the envelope), superpixels, then region selection, smoothing and hole
filling. Here, per z-section: the section is normalised (robust
percentiles) and low-pass filtered; Canny edges are dilated by the
envelope's radius; the edge-free region around a seed (the image centre by
default, as in the paper, where each cell is cropped around its nucleus) is
taken unless it leaks to the border, and grown back by the envelope radius;
SLIC superpixels (physical spacing) vote on it (majority). The mask is then
closed over the envelope, holes are filled per section and the surface
is smoothed (Gaussian of the mask at `smooth`
nm, threshold 0.5). It works for a bright or a dark compartment alike: only
the envelope's edges matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from emseg._checks import parse_spacing
from emseg.errors import EmsegValueError
from emseg.features import check_image
from emseg.semantic.classical._intensity import normalize_percentiles
from emseg.semantic.classical._morphology import (
    ball,
    binary_closing,
    fill_holes,
)
from emseg.semantic.classical._superpixels import superpixels


@dataclass(frozen=True)
class NucleusResult:
    """Output of :func:`segment_nucleus`.

    Attributes
    ----------
    mask : ndarray of bool
        The nucleus.
    edges : ndarray of bool
        Dilated Canny edges (the envelope and other boundaries).
    superpixels : ndarray of uint32
        SLIC ids used for the region decision.
    """

    mask: np.ndarray
    edges: np.ndarray
    superpixels: np.ndarray


def segment_nucleus(
    image: Any,
    *,
    spacing: Any = None,
    seed: tuple[float, ...] | None = None,
    lowpass: float = 8.0,
    edge_sigma: float = 16.0,
    envelope: float = 24.0,
    superpixel_size: float = 160.0,
    smooth: float = 40.0,
) -> NucleusResult:
    """Segment a compartment enclosed by an envelope (a nucleus), without learning.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array_like
        Grey levels of a region around the nucleus (e.g. one cell), the
        nucleus not touching the in-plane border.
    spacing : sequence of float, optional
        Voxel size in nm; every length below is in nm.
    seed : tuple of float, optional
        A point inside the nucleus, in voxels (y, x) or (z, y, x); only its
        in-plane position is used (every section is searched). Default: the
        centre of the image, as in Karabağ et al.
    lowpass : float, default 8
        Gaussian low-pass sigma (nm), in-plane.
    edge_sigma : float, default 16
        Canny's Gaussian sigma (nm).
    envelope : float, default 24
        Radius (nm) by which edges are dilated (the envelope's half width
        plus the gaps it must bridge); the region is grown back by it.
    superpixel_size : float, default 160
        SLIC superpixel diameter (nm): the region is decided per superpixel
        (majority vote), which follows the envelope more regularly than pixels.
    smooth : float, default 40
        Surface smoothing sigma (nm).

    Returns
    -------
    NucleusResult
        ``mask`` (bool, shape of `image`) and the intermediate edges and
        superpixels. Sections where the region around the seed leaks to the
        border (no closed envelope) get no nucleus.
    """
    from skimage.feature import canny

    arr = check_image(image)
    volume = arr if arr.ndim == 3 else arr[None]
    sp = parse_spacing(spacing, arr.ndim)
    sp3 = sp if arr.ndim == 3 else (1.0, *sp)
    shape = volume.shape
    if seed is None:
        yx = (shape[1] // 2, shape[2] // 2)
    else:
        yx = (round(seed[-2]), round(seed[-1]))
        if not (0 <= yx[0] < shape[1] and 0 <= yx[1] < shape[2]):
            raise EmsegValueError(f"`seed` {seed} lies outside the image of shape {arr.shape}.")
    norm = normalize_percentiles(volume, low=0.5, high=99.5, per_section=True)
    low = ndimage.gaussian_filter(norm, (0.0, lowpass / sp3[1], lowpass / sp3[2]), mode="reflect")
    dil = ball(envelope, sp3[1:])
    edges = np.zeros(shape, bool)
    region = np.zeros(shape, bool)
    for z in range(shape[0]):
        e = canny(
            low[z],
            sigma=edge_sigma / sp3[1],
            low_threshold=0.7,
            high_threshold=0.9,
            use_quantiles=True,
        )
        edges[z] = ndimage.binary_dilation(e, structure=dil)
        lab, _ = ndimage.label(~edges[z])
        if lab[yx] == 0:  # the seed sits on an edge: take the nearest region
            _, (iy, ix) = ndimage.distance_transform_edt(lab == 0, return_indices=True)
            start = lab[iy[yx], ix[yx]]
        else:
            start = lab[yx]
        if start == 0:
            continue
        r = lab == start
        if r[0].any() or r[-1].any() or r[:, 0].any() or r[:, -1].any():
            continue  # leaked to the border: no closed envelope here
        region[z] = ndimage.binary_dilation(r, structure=dil)
    sp_ids = superpixels(low, spacing=sp3, size=superpixel_size, compactness=0.1, per_section=True)
    n = int(sp_ids.max()) + 1
    counts = np.bincount(sp_ids.ravel(), minlength=n).astype(float)
    inside = np.bincount(sp_ids.ravel(), weights=region.ravel(), minlength=n)
    mask = (inside > 0.5 * np.maximum(counts, 1))[sp_ids]
    mask = binary_closing(mask, radius=envelope, spacing=sp3, per_section=True)
    mask = fill_holes(mask, per_section=True)
    if smooth > 0 and mask.any():
        sig = (smooth / sp3[0] if shape[0] > 1 else 0.0, smooth / sp3[1], smooth / sp3[2])
        mask = ndimage.gaussian_filter(mask.astype(np.float32), sig, mode="nearest") > 0.5
        mask = fill_holes(mask, per_section=True)
    if arr.ndim == 2:
        return NucleusResult(mask[0], edges[0], sp_ids[0])
    return NucleusResult(mask, edges, sp_ids)
