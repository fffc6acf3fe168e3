"""Supervoxels from a boundary map and their agglomeration (waterz-style mean boundary).

:func:`supervoxels` over-segments with a seeded watershed of the boundary
map; :func:`agglomerate_graph` merges the pair of regions with the lowest
mean boundary value along their common face first, re-computing the merged
region's faces exactly (boundary sums and voxel-pair counts add), until the
lowest mean reaches the threshold; :func:`agglomerate` runs both steps
on an image. With ``linkage="multicut"`` the faces are signed costs instead
(log-odds of the mean boundary against the threshold, weighted by face size)
and the pair with the largest summed cost merges first while it is positive:
greedy additive edge contraction, the standard multicut approximation. With
``merge_small``, segments still smaller than a size afterwards are merged
into the neighbour with the lowest mean boundary.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from emseg._checks import check_choice, is_positive_number, parse_spacing
from emseg.errors import EmsegValueError
from emseg.instance._rag import RegionAdjacencyGraph, region_adjacency_graph
from emseg.instance._validate import (
    check_labels,
    check_map,
    check_threshold,
    physical_size,
    to_voxels,
)
from emseg.instance._watershed import find_seeds, seeded_watershed

log = logging.getLogger(__name__)

SupervoxelSeeds = Literal["minima", "distance"]
Linkage = Literal["mean", "multicut"]
LINKAGES = ("mean", "multicut")
#: Mean boundary values are clipped to [EPS, 1 - EPS] before their log-odds (multicut costs).
EPS = 1e-3


def supervoxels(
    boundary: Any,
    *,
    spacing: Any = None,
    seeds: SupervoxelSeeds = "minima",
    sigma_nm: float | None = None,
    min_seed_distance_nm: float = 0.0,
    threshold: float = 0.5,
) -> np.ndarray:
    """Over-segment a boundary map into supervoxels with a seeded watershed.

    Parameters
    ----------
    boundary : (Z, Y, X) or (Y, X) ndarray of float
        Boundary probability (high = membrane). No NaN.
    spacing : float or sequence of float, optional
        Voxel size in nm (z, y, x).
    seeds : {"minima", "distance"}, default "minima"
        ``"minima"``: one seed per regional minimum of the (smoothed)
        boundary map; ``"distance"``: maxima of the distance transform (nm)
        of ``boundary < threshold`` (fewer, better placed seeds).
    sigma_nm : float, optional
        Gaussian smoothing (nm) before finding seeds and flooding.
    min_seed_distance_nm : float, default 0
        Seeds closer than this (nm) are merged into the higher one.
    threshold : float, default 0.5
        Cell interior for ``seeds="distance"``.

    Returns
    -------
    fragments : ndarray of uint32, same shape
        Supervoxel ids ``1..N``; every voxel belongs to one.
    """
    from scipy import ndimage

    check_choice(seeds, ("minima", "distance"), name="seeds")
    bnd = check_map(boundary, name="boundary")
    sp = parse_spacing(spacing, bnd.ndim)
    values = bnd.astype(np.float32)
    if sigma_nm:
        values = ndimage.gaussian_filter(values, [sigma_nm / s for s in sp], mode="nearest")
    if seeds == "minima":
        markers = find_seeds(-values, spacing=sp, min_distance_nm=min_seed_distance_nm)
    else:
        import edt

        inside = values < check_threshold(threshold, name="threshold")
        dt = edt.edt(inside.astype(np.uint8), anisotropy=sp).astype(np.float32)
        markers = find_seeds(dt, spacing=sp, min_distance_nm=min_seed_distance_nm, mask=inside)
        if markers.max() == 0:
            markers = find_seeds(-values, spacing=sp, min_distance_nm=min_seed_distance_nm)
    return seeded_watershed(values, markers)


@dataclass(frozen=True)
class Agglomeration:
    """Result of :func:`agglomerate_graph`.

    Attributes
    ----------
    nodes : (N,) ndarray of uint64
        The graph's node ids.
    segment : (N,) ndarray of uint64
        The new id of each node, ``1..K`` in order of the smallest node id.
    merges : (M, 3) ndarray of float64
        ``(u, v, mean)`` of every merge in order (u, v the merged roots).
    """

    nodes: np.ndarray
    segment: np.ndarray
    merges: np.ndarray

    def lookup(self, max_id: int) -> np.ndarray:
        """A table ``lut[old_id] = new_id`` for ids ``0..max_id`` (0 stays 0)."""
        lut = np.zeros(max_id + 1, dtype=np.uint64)
        lut[self.nodes.astype(np.int64)] = self.segment
        return lut


def agglomerate_graph(
    rag: RegionAdjacencyGraph,
    *,
    threshold: float,
    edge_weights: np.ndarray | None = None,
    merge_small: int = 0,
    linkage: Linkage = "mean",
    size_exponent: float = 1.0,
) -> Agglomeration:
    """Merge regions by increasing mean boundary along their faces, up to `threshold`.

    Parameters
    ----------
    rag : RegionAdjacencyGraph
        From :func:`region_adjacency_graph`.
    threshold : float
        Merge while the lowest mean boundary value of any face is
        ``< threshold``.
    edge_weights : (E,) ndarray of float, optional
        Per-edge values to average instead of the boundary map (e.g. a
        classifier's merge probabilities inverted); weighted by face size.
    merge_small : int, default 0
        Then merge every segment of fewer than `merge_small` voxels (the sum
        of its nodes' ``rag.sizes``), smallest first, into the neighbour with
        the lowest mean edge weight along their common face, whatever that
        mean is, until every segment that has a neighbour has at least
        `merge_small` voxels. A segment with no neighbour stays as it is.
        0 (the default) merges by the threshold only.
    linkage : {"mean", "multicut"}, default "mean"
        "mean": as above (waterz-style mean affinity; GASP's average linkage).
        "multicut": every face gets the signed cost
        ``w = (log((1 - p) / p) + log(t / (1 - t))) * (count / max count) ** size_exponent``
        with ``p`` its mean boundary (clipped to [1e-3, 1 - 1e-3]) and ``t`` the
        threshold: positive (attractive) exactly where ``p < t``, larger for
        larger and clearer faces. The pair with the largest cost merges first
        and the costs of the merged region's faces add, until no cost is
        positive: greedy additive edge contraction (GAEC, Keuper et al. 2015),
        the usual multicut approximation (GASP's sum linkage). These are
        elf's edge costs with ``beta = 1 - t`` and weighting "all", except
        that elf maps ``p`` affinely into [1e-3, 1 - 1e-3] where this clips
        (a change of at most 1e-3 in ``p``). A large face of moderately low
        boundary thus outweighs a small one of very low boundary, and several
        weak faces together can hold two regions apart.
    size_exponent : float, default 1
        Multicut only: the exponent of the face-size weighting (0: every face
        counts alike).

    Returns
    -------
    Agglomeration
        ``merges`` lists the threshold merges (third column: the face's mean
        for "mean", its summed cost for "multicut"), then the small-segment
        merges (third column: the mean).

    Notes
    -----
    After merging ``a`` and ``b``, the face between the merged region and a
    neighbour ``n`` has sum ``sum(a, n) + sum(b, n)`` and count
    ``count(a, n) + count(b, n)``, so its mean is the exact mean over all
    voxel pairs of the merged face (waterz's ``MeanAffinity``). Ties merge
    the smaller ``(u, v)`` first. Small segments are taken in order of
    ``(size, smallest node id)``; a tie of the mean between neighbours goes
    to the one with the smaller smallest node id; sizes and faces are
    updated after every merge.
    """
    t = check_threshold(threshold, name="threshold")
    small = _check_merge_small(merge_small)
    check_linkage(linkage, t)
    exponent_ok = is_positive_number(size_exponent) or (
        size_exponent == 0 and not isinstance(size_exponent, bool)
    )
    if linkage == "multicut" and not exponent_ok:
        raise EmsegValueError(
            f"`size_exponent` must be a number >= 0 (0: faces weigh alike); got {size_exponent!r}."
        )
    edges = rag.edges
    count = rag.features["count"]
    if edge_weights is None:
        total = rag.features["sum"]
    else:
        ew = np.asarray(edge_weights, dtype=np.float64)
        if ew.shape != (edges.shape[0],):
            raise EmsegValueError(
                f"`edge_weights` must have one value per edge ({edges.shape[0]}); got {ew.shape}."
            )
        total = ew * count
    adj: dict[int, dict[int, list[float]]] = {int(n): {} for n in rag.nodes}
    parent = {n: n for n in adj}
    size = dict(zip(rag.nodes.tolist(), rag.sizes.tolist(), strict=True)) if small else {}
    if linkage == "multicut":
        merges = _contract(adj, parent, size, edges, total, count, t, float(size_exponent))
        return _finish(rag, adj, parent, size, small, merges)
    heap: list[tuple[float, int, int]] = []
    for (a, b), s, c in zip(edges.tolist(), total.tolist(), count.tolist(), strict=True):
        stat = [s, c]
        adj[a][b] = stat
        adj[b][a] = stat
        heap.append((s / c, a, b))
    heapq.heapify(heap)
    merges = []
    while heap:
        mean, a, b = heapq.heappop(heap)
        if mean >= t:
            break
        found = adj.get(a, {}).get(b)
        if found is None or found[0] / found[1] != mean:
            continue  # stale entry
        keep, gone = (a, b) if len(adj[a]) >= len(adj[b]) else (b, a)
        merges.append((a, b, mean))
        for n, st in _merge_into(adj, parent, size, keep, gone):
            u, v = (keep, n) if keep < n else (n, keep)
            heapq.heappush(heap, (st[0] / st[1], u, v))
    return _finish(rag, adj, parent, size, small, merges)


def check_linkage(linkage: Any, threshold: float) -> None:
    """`linkage` is "mean" or "multicut", and a multicut threshold lies strictly inside (0, 1).

    Raises
    ------
    EmsegValueError
        Naming the allowed values.
    """
    check_choice(linkage, LINKAGES, name="linkage")
    if linkage == "multicut" and not 0.0 < threshold < 1.0:
        raise EmsegValueError(
            f"`threshold` must lie strictly between 0 and 1 for linkage='multicut' (faces "
            f"with a mean boundary below it attract, above it repel); got {threshold!r}."
        )


def multicut_costs(
    mean: np.ndarray, count: np.ndarray, threshold: float, size_exponent: float = 1.0
) -> np.ndarray:
    """Signed face costs of ``linkage="multicut"`` (positive = attractive, where mean < threshold).

    ``(log((1 - p) / p) + log(t / (1 - t))) * (count / count.max()) ** size_exponent``, with
    ``p`` = `mean` clipped to [1e-3, 1 - 1e-3] (float64).
    """
    p = np.clip(np.asarray(mean, dtype=np.float64), EPS, 1.0 - EPS)
    c = np.asarray(count, dtype=np.float64)
    w = np.log((1.0 - p) / p) + np.log(threshold / (1.0 - threshold))
    if c.size and size_exponent != 0:
        w = w * (c / c.max()) ** size_exponent
    return w


def _contract(
    adj: dict[int, dict[int, list[float]]],
    parent: dict[int, int],
    size: dict[int, int],
    edges: np.ndarray,
    total: np.ndarray,
    count: np.ndarray,
    t: float,
    size_exponent: float,
) -> list[tuple[int, int, float]]:
    """Greedy additive edge contraction: merge the largest positive summed cost first."""
    costs = multicut_costs(total / count, count, t, size_exponent)
    heap: list[tuple[float, int, int]] = []
    for (a, b), s, c, w in zip(edges.tolist(), total.tolist(), count.tolist(), costs.tolist(),
                               strict=True):  # fmt: skip
        stat = [s, c, w]  # boundary sum and pairs (for merge_small), cost
        adj[a][b] = stat
        adj[b][a] = stat
        heap.append((-w, a, b))
    heapq.heapify(heap)
    merges = []
    while heap:
        neg, a, b = heapq.heappop(heap)
        if -neg <= 0:
            break
        found = adj.get(a, {}).get(b)
        if found is None or found[2] != -neg:
            continue  # stale entry
        keep, gone = (a, b) if len(adj[a]) >= len(adj[b]) else (b, a)
        merges.append((a, b, -neg))
        for n, st in _merge_into(adj, parent, size, keep, gone):
            u, v = (keep, n) if keep < n else (n, keep)
            heapq.heappush(heap, (-st[2], u, v))
    return merges


def _finish(
    rag: RegionAdjacencyGraph,
    adj: dict[int, dict[int, list[float]]],
    parent: dict[int, int],
    size: dict[int, int],
    small: int,
    merges: list[tuple[int, int, float]],
) -> Agglomeration:
    """The clean-up of small segments, then the segment of every node."""
    if small:
        merges += _merge_small(adj, parent, size, small)
    nodes = rag.nodes.astype(np.uint64)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    roots = np.array([root(int(n)) for n in nodes], dtype=np.uint64)
    # new ids 1..K in order of each segment's smallest node id (nodes are sorted)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.uint64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, first.size + 1, dtype=np.uint64)
    segment = rank[inverse.ravel()]
    log.debug("agglomerate: %d nodes -> %d segments", nodes.size, first.size)
    return Agglomeration(nodes, segment, np.asarray(merges, dtype=np.float64).reshape(-1, 3))


def _check_merge_small(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise EmsegValueError(
            f"`merge_small` must be an integer number of voxels >= 0; got {value!r}. "
            "For a size in nm^3 use merge_small_nm3= of agglomerate / agglomerate_blockwise."
        )
    return int(value)


def _merge_into(
    adj: dict[int, dict[int, list[float]]],
    parent: dict[int, int],
    size: dict[int, int],
    keep: int,
    gone: int,
) -> list[tuple[int, list[float]]]:
    """Merge region `gone` into `keep` (faces add up); return the updated faces of `keep`."""
    parent[gone] = keep
    if size:
        size[keep] += size.pop(gone)
    del adj[keep][gone]
    changed = []
    for n, st in adj.pop(gone).items():
        if n == keep:
            continue
        del adj[n][gone]
        cur = adj[keep].get(n)
        if cur is None:
            adj[keep][n] = st
            adj[n][keep] = st
        else:
            for i, x in enumerate(st):  # boundary sum, voxel pairs (and multicut cost) add
                cur[i] += x
            st = cur
        changed.append((n, st))
    return changed


def _merge_small(
    adj: dict[int, dict[int, list[float]]],
    parent: dict[int, int],
    size: dict[int, int],
    min_size: int,
) -> list[tuple[int, int, float]]:
    """Merge segments below `min_size` voxels, smallest first, across their lowest-mean face.

    A segment is named by its smallest node id (``low``): ties of size, and of
    the mean between neighbours, go to the smaller one.
    """
    low = {r: r for r in adj}  # roots after the threshold merges -> smallest node id
    for n in parent:
        r = n
        while parent[r] != r:
            r = parent[r]
        low[r] = min(low[r], n)
    heap = [(s, low[r], r) for r, s in size.items() if s < min_size and adj[r]]
    heapq.heapify(heap)
    merges = []
    while heap:
        s, _, r = heapq.heappop(heap)
        if size.get(r) != s or not adj[r]:
            continue  # stale: merged or grown since
        faces = adj[r]
        target = min(faces, key=lambda n: (faces[n][0] / faces[n][1], low[n]))
        mean = faces[target][0] / faces[target][1]
        merges.append((min(r, target), max(r, target), mean))
        _merge_into(adj, parent, size, target, r)
        low[target] = min(low[target], low.pop(r))
        if size[target] < min_size:
            heapq.heappush(heap, (size[target], low[target], target))
    return merges


def agglomerate(
    fragments: Any,
    boundary: Any,
    *,
    threshold: float,
    spacing: Any = None,
    merge_small_nm3: float | None = None,
    linkage: Linkage = "mean",
) -> np.ndarray:
    """Merge `fragments` whose common faces have a mean `boundary` value below `threshold`.

    Parameters
    ----------
    fragments : (Z, Y, X) or (Y, X) ndarray of int
        Supervoxels (e.g. from :func:`supervoxels`); 0 stays 0.
    boundary : ndarray of float, same shape
        Boundary probability (high = membrane).
    threshold : float
        See :func:`agglomerate_graph`.
    spacing : float or sequence of float, optional
        Voxel size in nm (z, y, x); only used by `merge_small_nm3`.
    merge_small_nm3 : float, optional
        After the threshold, segments smaller than this (nm^3; nm^2 in 2D)
        are merged into the neighbour with the lowest mean boundary along
        their common face (``merge_small`` of :func:`agglomerate_graph`).
    linkage : {"mean", "multicut"}, default "mean"
        See :func:`agglomerate_graph`.

    Returns
    -------
    labels : ndarray of uint32 (uint64 beyond 2**32 - 1 segments), same shape
        Segments ``1..K``, numbered in order of their smallest fragment id.

    Examples
    --------
    >>> frag = np.array([[1, 1, 2, 2, 3, 3]])
    >>> bnd = np.array([[0, 0.1, 0.1, 0.8, 0.8, 0]])
    >>> agglomerate(frag, bnd, threshold=0.5)
    array([[1, 1, 1, 1, 2, 2]], dtype=uint32)
    >>> agglomerate(frag, bnd, threshold=0.5, spacing=(10, 10), merge_small_nm3=500)
    array([[1, 1, 1, 1, 1, 1]], dtype=uint32)
    """
    frag = check_labels(fragments, name="fragments")
    small = merge_small_voxels(merge_small_nm3, spacing=spacing, ndim=frag.ndim)
    rag = region_adjacency_graph(frag, boundary)
    result = agglomerate_graph(rag, threshold=threshold, merge_small=small, linkage=linkage)
    lut = result.lookup(int(frag.max()) if frag.size else 0)
    dtype = np.uint32 if result.segment.size < 2**32 else np.uint64
    return lut.astype(dtype)[frag]


def merge_small_voxels(merge_small_nm3: Any, *, spacing: Any, ndim: int) -> int:
    """`merge_small_nm3` (nm^3, nm^2 in 2D) as ``merge_small`` voxels of :func:`agglomerate_graph`.

    The smallest voxel count whose physical size is at least `merge_small_nm3`
    (segments below it are merged); 0 for None or 0. A size in voxels (less
    than one voxel's volume) is refused with the fix.
    """
    sp = parse_spacing(spacing, ndim)
    size = physical_size(merge_small_nm3, name="merge_small_nm3", spacing=sp, ndim=ndim)
    return to_voxels(size, sp)
