"""Per-object moments: sizes, bounding boxes, centroids and covariances, additive across blocks.

For every label the block kernel sums, in exact int64 arithmetic, the voxel
count, the coordinates ``Σx`` (3 values), their products ``Σx_i x_j``
(6 values) and the minimum / maximum coordinate per axis. Sums of disjoint
blocks add up (min / max of boxes combine), so the result on a volume split
into blocks equals the result on the whole volume exactly, whatever the
block shape. From them follow the centroid, the bounding box and the
covariance of the voxel centres, hence the principal axes (elongation) and
the equivalent diameter in nm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["ObjectMoments", "morphology_table", "object_moments"]

# second-moment order: zz, zy, zx, yy, yx, xx
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


@numba.njit(cache=True, nogil=True)
def _moment_kernel(compact, n_ids, z0, y0, x0):  # pragma: no cover - compiled
    nz, ny, nx = compact.shape
    cnt = np.zeros(n_ids, np.int64)
    s1 = np.zeros((n_ids, 3), np.int64)
    s2 = np.zeros((n_ids, 6), np.int64)
    lo = np.full((n_ids, 3), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n_ids, 3), -1, np.int64)
    for z in range(nz):
        gz = z + z0
        for y in range(ny):
            gy = y + y0
            for x in range(nx):
                k = compact[z, y, x]
                gx = x + x0
                cnt[k] += 1
                s1[k, 0] += gz
                s1[k, 1] += gy
                s1[k, 2] += gx
                s2[k, 0] += gz * gz
                s2[k, 1] += gz * gy
                s2[k, 2] += gz * gx
                s2[k, 3] += gy * gy
                s2[k, 4] += gy * gx
                s2[k, 5] += gx * gx
                if gz < lo[k, 0]:
                    lo[k, 0] = gz
                if gy < lo[k, 1]:
                    lo[k, 1] = gy
                if gx < lo[k, 2]:
                    lo[k, 2] = gx
                if gz > hi[k, 0]:
                    hi[k, 0] = gz
                if gy > hi[k, 1]:
                    hi[k, 1] = gy
                if gx > hi[k, 2]:
                    hi[k, 2] = gx
    return cnt, s1, s2, lo, hi


@dataclass(frozen=True, eq=False)
class ObjectMoments:
    """Additive per-label moments of a label volume (background 0 excluded).

    Coordinates are voxel indices in (z, y, x) order; a 2D image is treated
    as one section (z = 0). All sums are exact int64.

    Attributes
    ----------
    ids : (N,) ndarray of uint64
        Sorted labels (no 0).
    count : (N,) ndarray of int64
        Voxels per label.
    sum1 : (N, 3) ndarray of int64
        ``Σz, Σy, Σx``.
    sum2 : (N, 6) ndarray of int64
        ``Σzz, Σzy, Σzx, Σyy, Σyx, Σxx``.
    lo, hi : (N, 3) ndarray of int64
        Smallest / largest coordinate per axis (inclusive bounding box).
    """

    ids: np.ndarray
    count: np.ndarray
    sum1: np.ndarray
    sum2: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def empty(cls) -> ObjectMoments:
        """The moments of no voxel (neutral element of :meth:`merge`)."""
        i3 = np.zeros((0, 3), np.int64)
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.int64), i3, np.zeros((0, 6), np.int64),
                   i3, i3)  # fmt: skip

    def merge(self, other: ObjectMoments) -> ObjectMoments:
        """Moments of the union of two disjoint voxel sets (exact, associative)."""
        if self.ids.size == 0:
            return other
        if other.ids.size == 0:
            return self
        ids = np.concatenate([self.ids, other.ids])
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        start = np.ones(ids.size, dtype=bool)
        start[1:] = ids[1:] != ids[:-1]
        idx = np.flatnonzero(start)

        def cat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.concatenate([a, b])[order]

        return ObjectMoments(
            ids[idx],
            np.add.reduceat(cat(self.count, other.count), idx),
            np.add.reduceat(cat(self.sum1, other.sum1), idx, axis=0),
            np.add.reduceat(cat(self.sum2, other.sum2), idx, axis=0),
            np.minimum.reduceat(cat(self.lo, other.lo), idx, axis=0),
            np.maximum.reduceat(cat(self.hi, other.hi), idx, axis=0),
        )

    def __add__(self, other: ObjectMoments) -> ObjectMoments:
        return self.merge(other)

    def centroid(self) -> np.ndarray:
        """(N, 3) float64 centroid in voxels (z, y, x)."""
        return self.sum1 / np.maximum(self.count, 1)[:, None]

    def covariance(self, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
        """(N, 3, 3) covariance of the object as a solid of voxel boxes, in nm².

        The covariance of the voxel centres plus ``s_i² / 12`` on the diagonal
        (the second moment of one voxel box of side ``s_i``), so that a single
        voxel has a finite, physical shape.
        """
        n = np.maximum(self.count, 1).astype(np.float64)
        mean = self.sum1 / n[:, None]
        sp = np.asarray(spacing, dtype=np.float64)
        cov = np.empty((self.ids.size, 3, 3))
        for k, (i, j) in enumerate(_PAIRS):
            c = (self.sum2[:, k] / n - mean[:, i] * mean[:, j]) * sp[i] * sp[j]
            cov[:, i, j] = c
            cov[:, j, i] = c
        for i in range(3):
            cov[:, i, i] += sp[i] ** 2 / 12.0
        return cov


def object_moments(labels: np.ndarray, *, offset: Sequence[int] = (0, 0, 0)) -> ObjectMoments:
    """Moments of every nonzero label of a block whose first voxel is at `offset`.

    Parameters
    ----------
    labels : (Z, Y, X) or (Y, X) ndarray of int
        Labels of one block (0 = background, not measured).
    offset : sequence of 3 int
        Global (z, y, x) coordinate of ``labels[0, 0, 0]`` (for 2D: (0, y, x)).

    Returns
    -------
    ObjectMoments
    """
    import fastremap

    arr = np.asarray(labels)
    if arr.ndim == 2:
        arr = arr[None]
    ids = np.asarray(fastremap.unique(arr), dtype=np.uint64)
    if ids.size == 0:
        return ObjectMoments.empty()
    # compact ids: 0 .. len(ids) - 1 in sorted order (label 0, if present, is index 0)
    remap = {int(v): i for i, v in enumerate(ids.tolist())}
    compact = fastremap.remap(arr, remap, preserve_missing_labels=False, in_place=False)
    compact = np.ascontiguousarray(compact, dtype=np.int64 if ids.size > 2**31 else np.int32)
    cnt, s1, s2, lo, hi = _moment_kernel(compact, ids.size, int(offset[0]), int(offset[1]),
                                         int(offset[2]))  # fmt: skip
    keep = ids != 0
    return ObjectMoments(ids[keep], cnt[keep], s1[keep], s2[keep], lo[keep], hi[keep])


def morphology_table(
    moments: ObjectMoments, *, spacing: Sequence[float], ndim: int
) -> dict[str, np.ndarray]:
    """Size, equivalent diameter and elongation of every object, in physical units.

    Parameters
    ----------
    moments : ObjectMoments
    spacing : sequence of 3 float
        Voxel size in nm (z, y, x); for 2D data the first entry is ignored.
    ndim : {2, 3}
        2: areas (nm²) and the diameter of the disk of equal area; 3: volumes
        (nm³) and the diameter of the ball of equal volume.

    Returns
    -------
    dict of str to (N,) ndarray of float64
        ``size_nm`` (area or volume), ``equivalent_diameter_nm`` and
        ``elongation`` = sqrt(λ1 / λ2) of the two largest eigenvalues of the
        object's covariance (:meth:`ObjectMoments.covariance`; 1 for a ball
        or disk, large for rods).
    """
    sp = np.asarray(spacing, dtype=np.float64)
    if ndim == 2:
        unit = float(sp[1] * sp[2])
        size = moments.count * unit
        diam = np.sqrt(4.0 * size / math.pi)
        cov = moments.covariance((1.0, float(sp[1]), float(sp[2])))[:, 1:, 1:]
    else:
        unit = float(np.prod(sp))
        size = moments.count * unit
        diam = np.cbrt(6.0 * size / math.pi)
        cov = moments.covariance(tuple(float(v) for v in sp))
    if cov.shape[0]:
        ev = np.linalg.eigvalsh(cov)[:, ::-1]
        elong = np.sqrt(ev[:, 0] / np.maximum(ev[:, 1], 1e-300))
    else:
        elong = np.zeros(0)
    return {
        "size_nm": size.astype(np.float64),
        "equivalent_diameter_nm": diam,
        "elongation": elong,
    }
