"""Seeded watershed (compiled priority flood) and distance-transform watershed.

:func:`seeded_watershed` floods from markers in order of increasing priority
with 6-connectivity (4 in 2D), labelling each voxel from the voxel that
reached it first, exactly like ``skimage.segmentation.watershed`` with
``connectivity=1`` (same visiting order: priority, then insertion age).
:func:`find_seeds` places seeds on regional maxima with non-maximum
suppression in nm, and :func:`distance_watershed` splits touching objects of
a mask along the necks of its (anisotropy-aware) distance transform.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from emseg._checks import check_choice, parse_spacing
from emseg.errors import EmsegValueError
from emseg.instance._validate import check_labels, check_map, check_threshold
from emseg.instance._watershed_kernel import float_keys, flood_buckets, flood_heap

log = logging.getLogger(__name__)

SeedSource = Literal["distance", "probability"]


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return shape[0], shape[1], shape[2]


def seeded_watershed(
    image: Any,
    markers: Any,
    *,
    mask: Any = None,
    levels: int | None = None,
) -> np.ndarray:
    """Flood `markers` over `image` from low to high values (compiled, 6-connectivity).

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) ndarray
        Priorities: low values are flooded first. ``uint8`` / ``uint16``
        images use a bucket queue (O(1) per voxel); other dtypes a binary heap
        on their float32 values (values equal in float32 tie). No NaN.
    markers : ndarray of int, same shape
        Seeds ``> 0``; each keeps its id. Markers outside `mask` are dropped.
    mask : ndarray of bool, same shape, optional
        Only these voxels are flooded (the rest stays 0).
    levels : int, optional
        Quantise a float `image` linearly (its min to max) to this many
        levels (2 to 65536) and flood with the bucket queue: several times
        faster, and equal to the exact flood except where two voxels fall
        in the same level (then first-in first-out decides).

    Returns
    -------
    labels : ndarray, same shape, dtype of `markers` promoted to uint32 or uint64
        Every voxel of `mask` connected to a marker gets a marker id. Equal
        to ``skimage.segmentation.watershed(image, markers, mask=mask,
        connectivity=1)`` wherever no two queued voxels have equal values
        (e.g. float maps): both visit voxels by increasing value. Ties are
        broken first-in first-out (markers in raster order, then the order
        in which voxels were reached, neighbours in skimage's offset order),
        so the result is deterministic; skimage's heap breaks ties in its
        own, implementation-defined order, so on quantised (uint8) maps the
        two can differ along boundaries between equal values.

    Examples
    --------
    >>> img = np.array([[0, 1, 5, 1, 0]], np.uint8)
    >>> seeded_watershed(img, np.array([[1, 0, 0, 0, 2]]))
    array([[1, 1, 1, 2, 2]], dtype=uint32)
    """
    img = check_map(image, name="image")
    mk = check_labels(markers, name="markers")
    if mk.shape != img.shape:
        raise EmsegValueError(
            f"`markers` must have the shape of `image`; got {mk.shape} and {img.shape}."
        )
    if mask is None:
        m = np.ones(img.shape, dtype=np.bool_)
    else:
        m = np.asarray(mask, dtype=np.bool_)
        if m.shape != img.shape:
            raise EmsegValueError(
                f"`mask` must have the shape of `image`; got {m.shape} and {img.shape}."
            )
    nz, ny, nx = _shape3(img.shape)
    if levels is not None and img.dtype not in (np.uint8, np.uint16):
        if not 2 <= int(levels) <= 65536:
            raise EmsegValueError(f"`levels` must be in 2..65536; got {levels!r}.")
        img = quantize(img, int(levels))
    bucket = img.dtype in (np.uint8, np.uint16)
    if not bucket and img.size >= 2**32:
        raise EmsegValueError(
            f"`image` has {img.size} voxels; the in-memory watershed handles fewer than "
            "2**32. Run it blockwise (emseg.instance.watershed_blockwise)."
        )
    # labels and priorities share one uint64 word per voxel (see _watershed_kernel)
    shift = 16 if bucket else 32
    blocked = (1 << (64 - shift)) - 1
    ids = None
    top = int(mk.max()) if mk.size else 0
    if top >= blocked:  # huge ids: flood consecutive ones, map back at the end
        ids, inverse = np.unique(mk, return_inverse=True)
        mk = inverse.reshape(mk.shape)
    prio = np.ascontiguousarray(img) if bucket else float_keys(img)
    state = np.where(m, mk.astype(np.uint64), np.uint64(blocked)).ravel()
    state <<= np.uint64(shift)
    state |= prio.ravel().astype(np.uint64)
    if bucket:
        n_levels = int(img.max()) + 1 if img.size else 1
        flood_buckets(state, np.uint64(blocked), nz, ny, nx, n_levels)
    else:
        flood_heap(state, np.uint64(blocked), nz, ny, nx)
    state >>= np.uint64(shift)
    state[state == blocked] = 0
    if ids is not None:
        state = ids.astype(np.uint64)[state]
    out_dtype = np.uint32 if (ids is None and top < 2**32) else np.uint64
    out = state.astype(out_dtype)
    return out.reshape(img.shape)


def quantize(image: np.ndarray, levels: int) -> np.ndarray:
    """`image` mapped linearly from [min, max] to integers 0..levels-1 (uint16; order kept)."""
    lo = float(image.min()) if image.size else 0.0
    hi = float(image.max()) if image.size else 0.0
    scale = (levels - 1) / (hi - lo) if hi > lo else 0.0
    out = np.empty(image.shape, dtype=np.uint16)
    np.multiply(np.subtract(image, lo, dtype=np.float32), scale, out=out, casting="unsafe")
    return out


def _regional_maxima(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Voxels of `candidates` not lower than any of their 26 (8) neighbours."""
    from scipy import ndimage

    low = np.finfo(np.float64).min
    v = np.where(candidates, values.astype(np.float64), low)
    return candidates & (v >= ndimage.maximum_filter(v, size=3, mode="constant", cval=low))


def find_seeds(
    image: Any,
    *,
    spacing: Any = None,
    min_distance_nm: float,
    threshold: float | None = None,
    mask: Any = None,
    sigma_nm: float | None = None,
) -> np.ndarray:
    """Seeds on the regional maxima of `image`, at least `min_distance_nm` apart.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) ndarray
        A distance transform (nm) or a probability map; seeds go on maxima.
    spacing : float or sequence of float, optional
        Voxel size in nm (z, y, x); 1 per axis by default.
    min_distance_nm : float
        Seeds closer than this (Euclidean, in nm) are suppressed; the higher
        one is kept (ties: the first in raster order).
    threshold : float, optional
        Only maxima with ``image > threshold`` become seeds.
    mask : ndarray of bool, optional
        Only maxima inside the mask become seeds.
    sigma_nm : float, optional
        Gaussian smoothing (nm) of `image` before finding maxima.

    Returns
    -------
    markers : ndarray of uint32, same shape
        Seed ids ``1..N`` at one voxel each, numbered by decreasing value.
        A plateau (connected voxels of equal maximal value, 26-connected)
        gives one seed, at its voxel closest to its centroid.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    img = check_map(image, name="image")
    sp = parse_spacing(spacing, img.ndim)
    dist = check_threshold(min_distance_nm, name="min_distance_nm")
    if dist < 0:
        raise EmsegValueError(f"`min_distance_nm` must be >= 0; got {min_distance_nm!r}.")
    values = img.astype(np.float64)
    if sigma_nm is not None and sigma_nm > 0:
        values = ndimage.gaussian_filter(values, [sigma_nm / s for s in sp], mode="nearest")
    cand = np.ones(img.shape, np.bool_) if mask is None else np.asarray(mask, np.bool_).copy()
    if threshold is not None:
        cand &= values > check_threshold(threshold, name="threshold")
    peaks = _regional_maxima(values, cand)
    plateaus, n = ndimage.label(peaks, structure=np.ones((3,) * img.ndim, bool))
    markers = np.zeros(img.shape, dtype=np.uint32)
    if n == 0:
        return markers
    idx = np.flatnonzero(plateaus)
    lab = plateaus.ravel()[idx]
    coords = np.stack(np.unravel_index(idx, img.shape), axis=1).astype(np.float64) * sp
    counts = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    centroid = np.stack(
        [np.bincount(lab, coords[:, a], minlength=n + 1)[1:] / counts for a in range(img.ndim)],
        axis=1,
    )
    d2 = ((coords - centroid[lab - 1]) ** 2).sum(axis=1)
    order = np.lexsort((idx, d2, lab))  # per plateau: closest to centroid, then raster
    first = order[np.r_[True, lab[order][1:] != lab[order][:-1]]]
    pidx = idx[first]
    pval = values.ravel()[pidx]
    pxyz = coords[first]
    rank = np.lexsort((pidx, -pval))
    keep = np.ones(rank.size, dtype=np.bool_)
    if dist > 0 and rank.size > 1:
        tree = cKDTree(pxyz)
        alive = np.ones(rank.size, dtype=np.bool_)
        for r in rank:
            if not alive[r]:
                keep[r] = False
                continue
            for q in tree.query_ball_point(pxyz[r], dist * (1 - 1e-12)):
                if q != r:
                    alive[q] = False
    kept = rank[keep[rank]]
    markers.ravel()[pidx[kept]] = np.arange(1, kept.size + 1, dtype=np.uint32)
    log.debug("find_seeds: %d regional maxima, %d seeds", rank.size, kept.size)
    return markers


def distance_watershed(
    image: Any,
    *,
    threshold: float = 0.5,
    spacing: Any = None,
    min_seed_distance_nm: float,
    seeds: SeedSource = "distance",
    sigma_nm: float | None = None,
    min_seed_value: float | None = None,
    levels: int | None = 65536,
) -> np.ndarray:
    """Split touching objects: seeded watershed of the distance transform.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) ndarray
        A foreground mask (bool) or a probability map (foreground is
        ``image > threshold``).
    threshold : float, default 0.5
        Foreground threshold of a probability map (ignored for a bool mask).
    spacing : float or sequence of float, optional
        Voxel size in nm (z, y, x). The distance transform is computed in nm
        (``edt.edt(mask, anisotropy=spacing)``), so an object sampled
        anisotropically gets seeds where a physical object has them.
    min_seed_distance_nm : float
        Minimum distance between two seeds (nm).
    seeds : {"distance", "probability"}, default "distance"
        Seeds on maxima of the distance transform, or of the (smoothed)
        probability map.
    sigma_nm : float, optional
        Gaussian smoothing (nm) of the map the seeds are found on.
    min_seed_value : float, optional
        Only maxima above this value become seeds (nm for "distance").
    levels : int or None, default 65536
        Flood the distance transform quantised to this many levels (bucket
        queue, fast; distances closer than max / levels tie, first-in
        first-out); None floods the exact float32 values (heap).

    Returns
    -------
    labels : ndarray of uint32, same shape
        Objects ``1..N``, 0 = background. The flood follows decreasing
        distance (``-dt``), restricted to the foreground; every foreground
        component gets at least one seed.

    Examples
    --------
    >>> z, y, x = np.ogrid[:20, :20, :40]
    >>> two = ((z - 10)**2 + (y - 10)**2 + (x - 12)**2 < 64) | (
    ...     (z - 10)**2 + (y - 10)**2 + (x - 27)**2 < 64)
    >>> labels = distance_watershed(two, min_seed_distance_nm=6)
    >>> int(labels.max()), int(labels[10, 10, 12]) != int(labels[10, 10, 27])
    (2, True)
    """
    import edt

    check_choice(seeds, ("distance", "probability"), name="seeds")
    img = np.asarray(image)
    if img.dtype == np.bool_:
        fg = img
    else:
        img = check_map(img, name="image")
        fg = img > check_threshold(threshold, name="threshold")
    sp = parse_spacing(spacing, fg.ndim)
    # With no background voxel at all, edt's distances are all infinite: measure
    # them to the array's border instead (one object, seeded at its centre).
    black_border = bool(fg.size) and bool(fg.all())
    dt = edt.edt(
        np.ascontiguousarray(fg, dtype=np.uint8), anisotropy=sp, black_border=black_border
    ).astype(np.float32)
    source = dt if seeds == "distance" or img.dtype == np.bool_ else img
    markers = find_seeds(
        source,
        spacing=sp,
        min_distance_nm=min_seed_distance_nm,
        threshold=min_seed_value,
        mask=fg,
        sigma_nm=sigma_nm,
    )
    return seeded_watershed(-dt, markers, mask=fg, levels=levels)
