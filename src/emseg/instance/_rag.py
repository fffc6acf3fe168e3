"""Region adjacency graph of a label image with boundary statistics per face.

One compiled pass over the face-adjacent voxel pairs (6-connectivity, 4 in
2D) of two different non-zero labels collects, per pair, the mean of the
boundary map at the two voxels; the pairs are grouped by edge to give the
face size, the sum, mean, min, max and quantiles of the boundary values, and
the sizes of the two regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from emseg.errors import EmsegValueError
from emseg.instance._validate import check_labels, check_map

#: Quantiles of the boundary values along each face stored in the features.
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@numba.njit(cache=True)
def _face_pairs(
    labels: np.ndarray,
    boundary: np.ndarray,
    count_only: bool,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
) -> int:
    nz, ny, nx = labels.shape
    k = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                a = labels[z, y, x]
                if a == 0:
                    continue
                for d in range(3):
                    if d == 0:
                        if z + 1 >= nz:
                            continue
                        b = labels[z + 1, y, x]
                        bv = boundary[z + 1, y, x]
                    elif d == 1:
                        if y + 1 >= ny:
                            continue
                        b = labels[z, y + 1, x]
                        bv = boundary[z, y + 1, x]
                    else:
                        if x + 1 >= nx:
                            continue
                        b = labels[z, y, x + 1]
                        bv = boundary[z, y, x + 1]
                    if b == 0 or b == a:
                        continue
                    if not count_only:
                        if a < b:
                            u[k] = a
                            v[k] = b
                        else:
                            u[k] = b
                            v[k] = a
                        w[k] = 0.5 * (np.float64(boundary[z, y, x]) + np.float64(bv))
                    k += 1
    return k


def face_pairs(
    labels: np.ndarray, boundary: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All face-adjacent voxel pairs of different non-zero labels: (u < v, v, mean boundary)."""
    lab = np.ascontiguousarray(labels.astype(np.uint64, copy=False))
    bnd = np.ascontiguousarray(boundary)
    if lab.ndim == 2:
        lab, bnd = lab[None], bnd[None]
    empty_u = np.zeros(0, np.uint64)
    n = _face_pairs(lab, bnd, True, empty_u, empty_u, np.zeros(0, np.float64))
    u = np.empty(n, np.uint64)
    v = np.empty(n, np.uint64)
    w = np.empty(n, np.float64)
    _face_pairs(lab, bnd, False, u, v, w)
    return u, v, w


@dataclass(frozen=True)
class RegionAdjacencyGraph:
    """Edges between touching regions and their features.

    Attributes
    ----------
    edges : (E, 2) ndarray of uint64
        Sorted pairs ``(u, v)`` with ``u < v`` of labels that share a face.
    features : dict of str to (E,) ndarray of float64
        ``"count"`` (face size in voxel pairs), ``"sum"``, ``"mean"``,
        ``"min"``, ``"max"``, ``"q10"`` ... ``"q90"`` of the boundary map
        along the face (the mean of the two voxels of each pair), and
        ``"size_u"``, ``"size_v"`` (region sizes in voxels).
    nodes : (N,) ndarray of uint64
        Every non-zero label.
    sizes : (N,) ndarray of int64
        Voxels per node.
    """

    edges: np.ndarray
    features: dict[str, np.ndarray] = field(repr=False)
    nodes: np.ndarray
    sizes: np.ndarray

    def feature_matrix(self, names: tuple[str, ...] | None = None) -> np.ndarray:
        """(E, F) float64 matrix of the named features (all, in a fixed order, by default)."""
        names = names or tuple(sorted(self.features))
        return np.stack([self.features[k] for k in names], axis=1)


def region_adjacency_graph(labels: Any, boundary: Any) -> RegionAdjacencyGraph:
    """The region adjacency graph of `labels` with statistics of `boundary` on each face.

    Parameters
    ----------
    labels : (Z, Y, X) or (Y, X) ndarray of int
        Regions (e.g. supervoxels); 0 is ignored.
    boundary : ndarray of float, same shape
        Boundary probability (high = membrane). No NaN.

    Returns
    -------
    RegionAdjacencyGraph

    Examples
    --------
    >>> lab = np.array([[1, 1, 2, 2]]); bnd = np.array([[0.0, 0.2, 0.6, 0.0]])
    >>> rag = region_adjacency_graph(lab, bnd)
    >>> rag.edges.tolist(), float(rag.features["mean"][0]), rag.sizes.tolist()
    ([[1, 2]], 0.4, [2, 2])
    """
    lab = check_labels(labels)
    bnd = check_map(boundary, name="boundary")
    if lab.shape != bnd.shape:
        raise EmsegValueError(
            f"`labels` and `boundary` must have the same shape; got {lab.shape} and {bnd.shape}."
        )
    nodes, sizes = np.unique(lab[lab != 0], return_counts=True)
    nodes = nodes.astype(np.uint64)
    u, v, w = face_pairs(lab, bnd)
    return graph_from_pairs(u, v, w, nodes, sizes.astype(np.int64))


def graph_from_pairs(
    u: np.ndarray, v: np.ndarray, w: np.ndarray, nodes: np.ndarray, sizes: np.ndarray
) -> RegionAdjacencyGraph:
    """Group voxel pairs into edges with their features."""
    order = np.lexsort((w, v, u))
    u, v, w = u[order], v[order], w[order]
    new = np.ones(u.size, dtype=bool)
    if u.size:
        new[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, u.size))
    edges = np.stack([u[starts], v[starts]], axis=1) if u.size else np.zeros((0, 2), np.uint64)
    sums = np.add.reduceat(w, starts) if u.size else np.zeros(0)
    feats: dict[str, np.ndarray] = {
        "count": counts.astype(np.float64),
        "sum": sums,
        "mean": sums / np.maximum(counts, 1),
        "min": w[starts] if u.size else np.zeros(0),
        "max": w[starts + counts - 1] if u.size else np.zeros(0),
    }
    for q in QUANTILES:  # numpy's "linear" quantile within each (sorted) group
        pos = starts + q * (counts - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, starts + counts - 1)
        frac = pos - lo
        feats[f"q{round(q * 100)}"] = w[lo] * (1 - frac) + w[hi] * frac if u.size else np.zeros(0)
    idx_u = np.searchsorted(nodes, edges[:, 0])
    idx_v = np.searchsorted(nodes, edges[:, 1])
    feats["size_u"] = sizes[idx_u].astype(np.float64)
    feats["size_v"] = sizes[idx_v].astype(np.float64)
    return RegionAdjacencyGraph(edges.astype(np.uint64), feats, nodes, sizes)
