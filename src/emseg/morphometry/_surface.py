"""Surface area and surface points of one object, from its bounding-box crop, in nm.

3D: marching cubes (``skimage.measure.marching_cubes`` with ``spacing``, so
anisotropic voxels give the right geometry) at level 0 of the mask's signed
distance in nm (``edt`` with the spacing), lightly smoothed (Gaussian, sigma
0.7 voxel along every axis on which the object spans at least 3 voxels).
Marching cubes on a raw binary mask overestimates the area of smooth objects
by about 9 % isotropic and 26 % at 10:1 anisotropy (staircase); the signed
distance interpolates the shape between sections and brings voxelised balls
within 1 % of 4 pi r^2 at spacings (4, 4, 4), (12, 4, 4) and (40, 4, 4) when
they span at least 20 sections (about 9 % under for a ball only 5 sections
thick). 2D: the perimeter of the ``find_contours`` zero line of the same
field, in nm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: Gaussian sigma (voxels) applied before the iso-surface along axes with >= 3 voxels.
SMOOTH_SIGMA = 0.7


@dataclass(frozen=True)
class Surface:
    """The iso-surface of one object.

    Attributes
    ----------
    area : float
        Surface area in nm^2 (3D) or perimeter in nm (2D).
    vertices : (P, D) ndarray of float64
        Mesh vertices (3D) or contour points (2D) in nm, in the global frame
        (voxel index times spacing; a voxel centre sits at its index).
    """

    area: float
    vertices: np.ndarray


def object_surface(
    mask: np.ndarray, *, spacing: tuple[float, ...], origin: tuple[int, ...]
) -> Surface:
    """Iso-surface of a boolean crop whose first voxel has global index `origin`.

    Parameters
    ----------
    mask : (Z, Y, X) or (Y, X) ndarray of bool
        The object inside its bounding box.
    spacing : tuple of float
        Voxel size in nm.
    origin : tuple of int
        Global voxel index of ``mask[0, 0, 0]``.

    Returns
    -------
    Surface
    """
    from skimage.measure import find_contours, marching_cubes, mesh_surface_area

    pad = 2
    sp = np.asarray(spacing, np.float64)
    padded = np.pad(np.asarray(mask, bool), pad)
    field = signed_distance(padded, spacing=tuple(sp))
    sigma = [SMOOTH_SIGMA if s >= 3 else 0.0 for s in mask.shape]
    if any(sigma):
        smooth = ndi.gaussian_filter(field, sigma, mode="nearest")
        if float(smooth.max()) > 0:  # smoothing can erase a very thin object
            field = smooth
    shift = (np.asarray(origin, np.float64) - pad) * sp
    if mask.ndim == 3:
        verts, faces, _, _ = marching_cubes(field, 0.0, spacing=tuple(sp))
        area = float(mesh_surface_area(verts, faces))
        return Surface(area, verts.astype(np.float64) + shift)
    contours = find_contours(field, 0.0)
    area = 0.0
    pts = []
    for c in contours:
        c_nm = c * sp
        area += float(np.linalg.norm(np.diff(c_nm, axis=0), axis=1).sum())
        pts.append(c_nm[:-1] if len(c) > 1 and np.allclose(c[0], c[-1]) else c_nm)
    verts2 = np.concatenate(pts) if pts else np.zeros((0, 2))
    return Surface(area, verts2 + shift)


def signed_distance(mask: np.ndarray, *, spacing: tuple[float, ...]) -> np.ndarray:
    """Signed Euclidean distance in nm (positive inside) between voxel centres, float32.

    The object boundary is its zero level: halfway between the last voxel in
    and the first voxel out along any axis, whatever the spacing.
    """
    import edt

    inside = edt.edt(mask, anisotropy=spacing)
    outside = edt.edt(~mask, anisotropy=spacing)
    return (inside - outside).astype(np.float32)


def subsample_points(points: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """At most `n` rows of `points`, chosen uniformly without replacement (reproducible)."""
    if len(points) <= n:
        return points
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(points), size=n, replace=False))
    return points[idx]
