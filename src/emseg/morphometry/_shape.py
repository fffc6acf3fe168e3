"""Shape descriptors in nm: principal axes from second moments, convex hull, Feret, sphericity.

Definitions (D = 2 or 3, lambda_i = eigenvalues of the covariance of voxel
centre coordinates in nm^2, sorted decreasing):

- axis lengths: the full axes of the solid ellipsoid (ellipse) with the same
  second moments, ``sqrt(20 lambda_i)`` in 3D and ``4 sqrt(lambda_i)`` in 2D
  (scikit-image's ``axis_major_length`` / ``axis_minor_length``);
- ``elongation = L1 / L2`` and ``flatness = L2 / L3`` (3D), both >= 1;
- ``equivalent_diameter``: of the sphere (circle) of the same volume (area);
- ``sphericity = pi^(1/3) (6 V)^(2/3) / A`` (1 for a ball), 3D only;
- ``solidity``: voxels of the object / voxels whose centre lies in the convex
  hull of the centres of the object's voxel faces (scikit-image's definition);
- ``feret_max``: the largest distance between two points of the surface
  mesh (contour), from the vertices of its convex hull.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist


def principal_axes(covariance_nm2: np.ndarray) -> np.ndarray:
    """Full axis lengths (nm), decreasing, of the ellipsoid with these second moments.

    Parameters
    ----------
    covariance_nm2 : (N, D, D) ndarray of float
        Covariance of coordinates in nm^2.

    Returns
    -------
    (N, D) ndarray of float64
    """
    d = covariance_nm2.shape[-1]
    ev = np.linalg.eigvalsh(covariance_nm2)[:, ::-1]
    ev = np.clip(ev, 0.0, None)
    return np.sqrt(20.0 * ev) if d == 3 else 4.0 * np.sqrt(ev)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.inf)


def axis_ratios(axes: np.ndarray) -> dict[str, np.ndarray]:
    """Elongation (L1/L2) and, in 3D, flatness (L2/L3) from :func:`principal_axes`."""
    out = {"elongation": _ratio(axes[:, 0], axes[:, 1])}
    if axes.shape[1] == 3:
        out["flatness"] = _ratio(axes[:, 1], axes[:, 2])
    return out


def equivalent_diameter(size: np.ndarray, ndim: int) -> np.ndarray:
    """Diameter (nm) of the ball (disk) of volume nm^3 (area nm^2) `size`."""
    if ndim == 3:
        return np.cbrt(6.0 * size / np.pi)
    return np.sqrt(4.0 * size / np.pi)


def sphericity(volume: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Wadell sphericity ``pi^(1/3) (6 V)^(2/3) / A`` (1 for a ball)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.cbrt(np.pi) * np.cbrt(6.0 * volume) ** 2 / area


def convex_voxels(mask: np.ndarray) -> int:
    """Number of voxels of the crop whose centre lies in the convex hull of `mask`'s voxel face centres.

    Equals the size of ``skimage.morphology.convex_hull_image(mask)``. The hull
    is taken over the face centres of boundary voxels only (interior points
    cannot be hull vertices). Convexity does not depend on the spacing, so
    this count is computed in voxel units.
    """
    if not mask.any():
        return 0
    d = mask.ndim
    boundary = mask & ~_erode(mask)
    pts = np.argwhere(boundary).astype(np.float64)
    # the face centres of each voxel (the "diamond" scikit-image uses)
    offsets = np.concatenate([np.eye(d) * 0.5, -np.eye(d) * 0.5])
    corners = (pts[:, None, :] + offsets[None, :, :]).reshape(-1, d)
    corners = np.unique(corners, axis=0)
    try:
        hull = ConvexHull(corners)
    except QhullError:
        return int(mask.sum())
    return int(max(_count_inside(hull.equations, mask.shape), int(mask.sum())))


def _count_inside(equations: np.ndarray, shape: tuple[int, ...]) -> int:
    """Voxel centres of a box of `shape` inside the half-spaces ``a . p + b <= 0``.

    Row by row along the last axis: each facet bounds the row to an interval,
    so the work is rows x facets instead of voxels x facets.
    """
    tol = 1e-9
    rows = np.argwhere(np.ones(shape[:-1], bool)).astype(np.float64)  # (R, D-1)
    a_last = equations[:, -2]
    rhs = -(rows @ equations[:, :-2].T + equations[:, -1][None, :]) + tol  # (R, F)
    lo = np.zeros(len(rows))
    hi = np.full(len(rows), float(shape[-1] - 1))
    pos = a_last > tol
    neg = a_last < -tol
    flat = ~(pos | neg)
    if pos.any():
        hi = np.minimum(hi, (rhs[:, pos] / a_last[pos]).min(axis=1))
    if neg.any():
        lo = np.maximum(lo, (rhs[:, neg] / a_last[neg]).max(axis=1))
    ok = np.all(rhs[:, flat] >= 0, axis=1) if flat.any() else np.ones(len(rows), bool)
    counts = np.floor(hi) - np.ceil(lo) + 1
    return int(np.clip(counts[ok], 0, None).sum())


def _erode(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, border_value=0)


def feret_max(points_nm: np.ndarray) -> float:
    """Largest distance (nm) between two of `points_nm` (via their convex hull)."""
    if len(points_nm) < 2:
        return 0.0
    try:
        hull = ConvexHull(points_nm)
        pts = points_nm[hull.vertices]
    except (QhullError, ValueError):
        pts = points_nm
    if len(pts) > 4000:  # bound the O(n^2) step on huge hulls
        pts = pts[np.linspace(0, len(pts) - 1, 4000).astype(int)]
    return float(pdist(pts).max())
