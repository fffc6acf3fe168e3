"""Per-label sums that add up across blocks: one streaming reduction for every region measure.

A block of labels (and optionally the raw image and a semantic class map)
becomes a :class:`RegionSums`: for each label present, its voxel count, the
mean and centred second moments of its voxel coordinates (merged with the
parallel formula of Chan et al., so that large volumes do not lose precision),
its bounding box, intensity sums / min / max and a per-label intensity
histogram, and the (label, class) voxel counts. Two summaries merge into the
summary of the union of their voxels, so the result does not depend on the
block shape (exactly for integers, up to float rounding for moments).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emseg.blockwise import SparseCounts


@dataclass(frozen=True)
class RegionSums:
    """Additive per-label summary of a label volume (labels > 0 only).

    Attributes
    ----------
    labels : (N,) ndarray of uint64
        Sorted label ids.
    count : (N,) ndarray of int64
        Voxels per label.
    mean : (N, D) ndarray of float64
        Mean voxel coordinate (voxel units, global index).
    m2 : (N, D, D) ndarray of float64
        Sum of outer products of coordinates about the mean (voxel units).
    bbox_min, bbox_max : (N, D) ndarray of int64
        Inclusive lower / exclusive upper voxel corner of each label's box.
    isum, isumsq : (N,) ndarray of float64
        Sum and sum of squares of intensities (zeros without an image).
    imin, imax : (N,) ndarray of float64
        Minimum and maximum intensity (NaN without an image).
    hist : (N, B) ndarray of int64
        Intensity histogram per label over ``edges`` (B = 0 without an image).
    edges : (B + 1,) ndarray of float64
        Histogram bin edges.
    classes : SparseCounts
        Voxel counts of (label, class) pairs (empty without a class map).
    """

    labels: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    isum: np.ndarray
    isumsq: np.ndarray
    imin: np.ndarray
    imax: np.ndarray
    hist: np.ndarray
    edges: np.ndarray
    classes: SparseCounts

    @property
    def ndim(self) -> int:
        return int(self.mean.shape[1])

    @classmethod
    def empty(cls, ndim: int, edges: np.ndarray | None = None) -> RegionSums:
        e = np.zeros(0) if edges is None else np.asarray(edges, np.float64)
        nb = max(len(e) - 1, 0)
        return cls(
            labels=np.zeros(0, np.uint64),
            count=np.zeros(0, np.int64),
            mean=np.zeros((0, ndim)),
            m2=np.zeros((0, ndim, ndim)),
            bbox_min=np.zeros((0, ndim), np.int64),
            bbox_max=np.zeros((0, ndim), np.int64),
            isum=np.zeros(0),
            isumsq=np.zeros(0),
            imin=np.zeros(0),
            imax=np.zeros(0),
            hist=np.zeros((0, nb), np.int64),
            edges=e,
            classes=SparseCounts(np.zeros((0, 2), np.uint64), np.zeros(0, np.int64)),
        )

    def merge(self, other: RegionSums) -> RegionSums:
        """The summary of the voxels of both (labels present in both are combined)."""
        if len(self.labels) == 0:
            return other
        if len(other.labels) == 0:
            return self
        labels = np.union1d(self.labels, other.labels)
        n = len(labels)
        d = self.ndim
        ia = np.searchsorted(labels, self.labels)
        ib = np.searchsorted(labels, other.labels)
        count = np.zeros(n, np.int64)
        count[ia] += self.count
        count[ib] += other.count
        # Chan et al.: combine means and centred moments
        sa = np.zeros((n, d))
        sa[ia] = self.mean * self.count[:, None]
        sa[ib] += other.mean * other.count[:, None]
        mean = sa / count[:, None]
        m2 = np.zeros((n, d, d))
        m2[ia] += self.m2 + self.count[:, None, None] * _outer(self.mean - mean[ia])
        m2[ib] += other.m2 + other.count[:, None, None] * _outer(other.mean - mean[ib])
        big = np.iinfo(np.int64).max
        bmin = np.full((n, d), big, np.int64)
        bmax = np.full((n, d), -big, np.int64)
        bmin[ia] = np.minimum(bmin[ia], self.bbox_min)
        bmin[ib] = np.minimum(bmin[ib], other.bbox_min)
        bmax[ia] = np.maximum(bmax[ia], self.bbox_max)
        bmax[ib] = np.maximum(bmax[ib], other.bbox_max)
        isum = np.zeros(n)
        isumsq = np.zeros(n)
        imin = np.full(n, np.inf)
        imax = np.full(n, -np.inf)
        hist = np.zeros((n, self.hist.shape[1]), np.int64)
        for idx, s in ((ia, self), (ib, other)):
            isum[idx] += s.isum
            isumsq[idx] += s.isumsq
            imin[idx] = np.fmin(imin[idx], s.imin)
            imax[idx] = np.fmax(imax[idx], s.imax)
            hist[idx] += s.hist
        imin[np.isinf(imin)] = np.nan
        imax[np.isinf(imax)] = np.nan
        return RegionSums(
            labels=labels,
            count=count,
            mean=mean,
            m2=m2,
            bbox_min=bmin,
            bbox_max=bmax,
            isum=isum,
            isumsq=isumsq,
            imin=imin,
            imax=imax,
            hist=hist,
            edges=self.edges,
            classes=self.classes.merge(other.classes),
        )

    def covariance(self) -> np.ndarray:
        """(N, D, D) population covariance of voxel coordinates (voxel units)."""
        return self.m2 / np.maximum(self.count, 1)[:, None, None]


def _outer(v: np.ndarray) -> np.ndarray:
    return v[:, :, None] * v[:, None, :]


def region_sums(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    *,
    origin: tuple[int, ...] | None = None,
    edges: np.ndarray | None = None,
) -> RegionSums:
    """Summarise the labels (> 0) of one block.

    Parameters
    ----------
    labels : (Z, Y, X) or (Y, X) ndarray of int
        Label block.
    image : ndarray, same shape, optional
        Raw intensities.
    classes : ndarray of int, same shape, optional
        Semantic class map.
    origin : tuple of int, optional
        Global voxel index of the block's first voxel (default zeros).
    edges : (B + 1,) ndarray of float, optional
        Intensity histogram bin edges (required to get a histogram).

    Returns
    -------
    RegionSums
    """
    labels = np.asarray(labels)
    d = labels.ndim
    origin = tuple(origin) if origin is not None else (0,) * d
    e = np.zeros(0) if edges is None else np.asarray(edges, np.float64)
    flat = labels.ravel()
    fg = np.flatnonzero(flat)
    if fg.size == 0:
        return RegionSums.empty(d, e)
    lab = flat[fg].astype(np.uint64)
    uniq, inv = np.unique(lab, return_inverse=True)
    n = len(uniq)
    count = np.bincount(inv, minlength=n).astype(np.int64)
    coords = np.stack(np.unravel_index(fg, labels.shape), axis=1).astype(np.int64)
    coords += np.asarray(origin, np.int64)
    cf = coords.astype(np.float64)
    sums = np.stack([np.bincount(inv, cf[:, k], minlength=n) for k in range(d)], 1)
    mean: np.ndarray = sums / count[:, None]
    centred = cf - mean[inv]
    m2 = np.empty((n, d, d))
    for i in range(d):
        for j in range(i, d):
            m2[:, i, j] = m2[:, j, i] = np.bincount(inv, centred[:, i] * centred[:, j], minlength=n)
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    sc = coords[order]
    bmin = np.minimum.reduceat(sc, starts, axis=0)
    bmax = np.maximum.reduceat(sc, starts, axis=0) + 1
    nb = max(len(e) - 1, 0)
    isum: np.ndarray
    isumsq: np.ndarray
    imin: np.ndarray
    imax: np.ndarray
    if image is not None:
        vals = np.asarray(image).ravel()[fg]
        v = vals.astype(np.float64)
        isum = np.bincount(inv, v, minlength=n)
        isumsq = np.bincount(inv, v * v, minlength=n)
        sv = v[order]
        imin = np.minimum.reduceat(sv, starts)
        imax = np.maximum.reduceat(sv, starts)
        if nb:
            if vals.dtype == np.uint8 and nb == 256 and e[0] == 0 and e[-1] == 256:
                b = vals.astype(np.int64)
            else:
                b = np.clip(np.searchsorted(e, v, side="right") - 1, 0, nb - 1)
            hist = np.bincount(inv * nb + b, minlength=n * nb).reshape(n, nb).astype(np.int64)
        else:
            hist = np.zeros((n, 0), np.int64)
    else:
        isum = np.zeros(n)
        isumsq = np.zeros(n)
        imin = np.full(n, np.nan)
        imax = np.full(n, np.nan)
        hist = np.zeros((n, nb), np.int64)
    if classes is not None:
        cls = SparseCounts.from_arrays(lab, np.asarray(classes).ravel()[fg])
    else:
        cls = SparseCounts(np.zeros((0, 2), np.uint64), np.zeros(0, np.int64))
    return RegionSums(
        labels=uniq,
        count=count,
        mean=mean,
        m2=m2,
        bbox_min=bmin.astype(np.int64),
        bbox_max=bmax.astype(np.int64),
        isum=isum,
        isumsq=isumsq,
        imin=imin,
        imax=imax,
        hist=hist,
        edges=e,
        classes=cls,
    )


def histogram_percentiles(hist: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """Percentile `q` (0..100) of each row of `hist`, as numpy's 'lower' method for unit bins.

    For a uint8 image with unit bins ``0..256`` the result is exactly
    ``np.percentile(values, q, method='lower')``; for wider bins it is the
    lower edge of the bin holding that rank (error below one bin width).

    Returns
    -------
    (N,) ndarray of float64 (NaN for empty rows)
    """
    total = hist.sum(axis=1)
    out = np.full(len(hist), np.nan)
    if hist.shape[1] == 0:
        return out
    cum = np.cumsum(hist, axis=1)
    rank = np.floor(q / 100.0 * (total - 1)).astype(np.int64)  # 0-based rank, 'lower'
    ok = total > 0
    idx = np.array(
        [np.searchsorted(c, r, side="right") for c, r in zip(cum, rank, strict=True)], np.int64
    )
    out[ok] = edges[idx[ok]]
    return out
