"""Neuron agglomeration of volumes of any size on one global region adjacency graph.

The large-scale design of daisy / lsd / waterz pipelines, in four passes:

1. **fragments** (:func:`fragments_blockwise`): per block, :func:`supervoxels`
   of the read region (write region + halo), cropped to the write region and
   made globally unique (ids ``block_id * prod(block_shape) + 1, ...``);
   fragments are cut at block faces, the agglomeration merges them back.
2. **edges** (:func:`graph_blockwise`): per block, every face-adjacent voxel
   pair of two different non-zero fragments whose *lower* voxel lies in the
   block's write region (the block reads one plane more on each axis, so a
   pair across a block face is counted once), with the pair's boundary value
   coded as the integer ``code = a + b`` (``a``, ``b`` the uint8 levels
   ``round(255 p)`` of its two voxels, ``0..510``), reduced into one sparse
   table ``(u, v, code, count)`` plus the fragment sizes.
3. **agglomeration**: :func:`~emseg.instance.agglomerate_graph` once, on the
   graph rebuilt from that table, with mean-boundary or learned
   (``1 - p``) edge weights: a fragment -> segment lookup.
4. **relabel**: per block, fragments -> segments ``1..N`` (uint64).

The graph's features are computed exactly from the integer codes, identical
to :func:`boundary_graph` (the in-memory graph of the same fragments and the
quantised map), so the blockwise result equals the in-memory chain on the
same fragments bit for bit, for every block shape and scheduler. Memory of
the global steps is bounded by the number of fragments and of (fragment
pair, code) rows (at most 511 per adjacent pair), never by the voxels.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from emseg._checks import check_label_dtype
from emseg.blockwise import (
    Blocking,
    Journal,
    SchedulerLike,
    TreeReducer,
    check_chunk_alignment,
    check_inputs,
    default_block_shape,
    finish_output,
    input_spacing,
    map_blocks,
    open_backend,
    prepare_output,
    read_block,
    reduce_blocks,
    resolve_chunks,
    run_blocks,
)
from emseg.blockwise import as_inputs as _normalize_inputs
from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.instance._agglomerate import (
    Linkage,
    agglomerate_graph,
    check_linkage,
    merge_small_voxels,
    supervoxels,
)
from emseg.instance._blockwise import _check_out, _Named, _open_out, _Remap, _Scratch
from emseg.instance._rag import QUANTILES, RegionAdjacencyGraph, region_adjacency_graph
from emseg.instance._validate import check_labels, check_map, check_threshold

log = logging.getLogger(__name__)

#: The boundary map is quantised to ``round(LEVELS * p)`` (as ``emseg segment`` stores it).
LEVELS = 255

#: Features of the boundary values along a face (scaled from levels to [0, 1]).
_BOUNDARY_FEATURES = ("sum", "mean", "min", "max", *(f"q{round(q * 100)}" for q in QUANTILES))


# ---------------------------------------------------------------------------
# quantisation and the in-memory reference


def quantise_boundary(boundary: Any, *, name: str = "boundary") -> np.ndarray:
    """The boundary map as uint8 levels ``round(255 p)``, as ``emseg segment`` stores it.

    Parameters
    ----------
    boundary : ndarray of float in [0, 1], or of uint8
        Boundary probability (values outside [0, 1] are clipped), or uint8
        levels already (``p = q / 255``), returned unchanged.

    Returns
    -------
    ndarray of uint8, same shape
    """
    arr = np.asarray(boundary)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind != "f":
        raise EmsegTypeError(
            f"`{name}` must be a float probability map in [0, 1] or uint8 levels round(255 p); "
            f"got dtype {arr.dtype}. Convert it, e.g. (p / p.max()).astype(np.float32)."
        )
    if not np.isfinite(arr).all():
        check_map(arr, name=name, ndims=(arr.ndim,))  # raises with the NaN count
    return np.rint(np.clip(arr, 0.0, 1.0) * float(LEVELS)).astype(np.uint8)


def dequantise(levels: np.ndarray) -> np.ndarray:
    """uint8 levels -> float32 ``q / 255`` (what the fragments are computed on)."""
    return levels.astype(np.float32) / np.float32(LEVELS)


def _scaled(rag: RegionAdjacencyGraph) -> RegionAdjacencyGraph:
    """A graph computed on levels with its boundary features scaled to [0, 1]."""
    feats = dict(rag.features)
    for k in _BOUNDARY_FEATURES:
        feats[k] = feats[k] / float(LEVELS)
    return RegionAdjacencyGraph(rag.edges, feats, rag.nodes, rag.sizes)


def boundary_graph(fragments: Any, boundary: Any) -> RegionAdjacencyGraph:
    """In memory: the region adjacency graph of `fragments` on the quantised `boundary`.

    :func:`region_adjacency_graph` of the uint8 levels (each voxel pair's
    value ``(a + b) / 2`` is exact, so are the face sums), with the boundary
    features divided by 255. Equal, up to the last bits of floating-point
    rounding, to ``region_adjacency_graph(fragments, q / 255)``; bit for bit
    equal to the graph :func:`graph_blockwise` builds for any block shape.

    Parameters
    ----------
    fragments : (Z, Y, X) or (Y, X) ndarray of int
        Supervoxels; 0 is ignored.
    boundary : ndarray of float in [0, 1] or uint8, same shape
        Quantised with :func:`quantise_boundary`.

    Returns
    -------
    RegionAdjacencyGraph

    Examples
    --------
    >>> frag = np.array([[1, 1, 2, 2]])
    >>> g = boundary_graph(frag, np.array([[0.0, 0.2, 0.6, 0.0]]))
    >>> round(float(g.features["mean"][0]) * 255)  # (51 + 153) / 2 levels
    102
    """
    return _scaled(region_adjacency_graph(fragments, quantise_boundary(boundary)))


# ---------------------------------------------------------------------------
# pass 2: the sparse table of one block, and how tables merge


def _aggregate(u: np.ndarray, v: np.ndarray, code: np.ndarray, count: np.ndarray) -> np.ndarray:
    """(K, 4) uint64 rows ``(u, v, code, count)``, sorted and unique in (u, v, code)."""
    if u.size == 0:
        return np.zeros((0, 4), np.uint64)
    order = np.lexsort((code, v, u))
    u, v, code, count = u[order], v[order], code[order], count[order]
    new = np.ones(u.size, dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1]) | (code[1:] != code[:-1])
    starts = np.flatnonzero(new)
    total = np.add.reduceat(count.astype(np.uint64), starts)
    return np.stack([u[starts], v[starts], code[starts], total], axis=1).astype(np.uint64)


def _aggregate_sizes(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(N, 2) uint64 rows ``(id, voxels)``, sorted and unique."""
    if ids.size == 0:
        return np.zeros((0, 2), np.uint64)
    uniq, inv = np.unique(ids, return_inverse=True)
    total = np.bincount(inv.ravel(), weights=counts.astype(np.float64), minlength=uniq.size)
    return np.stack([uniq, np.rint(total)], axis=1).astype(np.uint64)


def _merge(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    t = np.concatenate([a[0], b[0]])
    s = np.concatenate([a[1], b[1]])
    return _aggregate(t[:, 0], t[:, 1], t[:, 2], t[:, 3]), _aggregate_sizes(s[:, 0], s[:, 1])


def _block_table(
    fragments: np.ndarray, boundary: np.ndarray, *, block: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of a block whose lower voxel lies in its write region, and its fragment sizes.

    `fragments` and `boundary` are the read region of the write region grown
    by one voxel on each side (only the plane above is used).
    """
    lab = check_labels(fragments, name="fragments")
    lev = quantise_boundary(boundary)
    start = [s.start for s in block.write_in_read]
    wshape = block.write_roi.shape
    ext = tuple(
        slice(b, min(b + n + 1, lab.shape[i]))
        for i, (b, n) in enumerate(zip(start, wshape, strict=True))
    )
    lab = lab[ext].astype(np.uint64, copy=False)
    lev = lev[ext]
    us, vs, cs = [], [], []
    for axis in range(lab.ndim):
        n_low = min(wshape[axis], lab.shape[axis] - 1)
        lo = [slice(0, n) for n in wshape]
        hi = list(lo)
        lo[axis] = slice(0, n_low)
        hi[axis] = slice(1, n_low + 1)
        a, b = lab[tuple(lo)], lab[tuple(hi)]
        m = (a != b) & (a != 0) & (b != 0)
        a, b = a[m], b[m]
        us.append(np.minimum(a, b))
        vs.append(np.maximum(a, b))
        cs.append(lev[tuple(lo)][m].astype(np.uint64) + lev[tuple(hi)][m].astype(np.uint64))
    u, v, c = np.concatenate(us), np.concatenate(vs), np.concatenate(cs)
    table = _aggregate(u, v, c, np.ones(u.size, np.uint64))
    inner = lab[tuple(slice(0, n) for n in wshape)]
    ids, counts = np.unique(inner[inner != 0], return_counts=True)
    sizes = (
        np.stack([ids, counts], axis=1).astype(np.uint64)
        if ids.size
        else np.zeros((0, 2), np.uint64)
    )
    return table, sizes


def _graph_from_table(table: np.ndarray, sizes: np.ndarray) -> RegionAdjacencyGraph:
    """The graph of a global table, with the arithmetic of :func:`boundary_graph` (exact)."""
    nodes = sizes[:, 0].astype(np.uint64)
    node_sizes = sizes[:, 1].astype(np.int64)
    u, v = table[:, 0], table[:, 1]
    code = table[:, 2].astype(np.int64)
    cnt = table[:, 3].astype(np.int64)
    new = np.ones(u.size, dtype=bool)
    if u.size:
        new[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    first = np.flatnonzero(new)  # first row of each edge
    last = np.append(first[1:], u.size) - 1
    counts = np.add.reduceat(cnt, first) if u.size else np.zeros(0, np.int64)
    row_end = np.cumsum(cnt)  # pair index just after each row
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if u.size else counts
    w_of_row = code.astype(np.float64) / 2.0  # the mean of the two voxels, in levels: exact

    def w(index: np.ndarray) -> np.ndarray:  # the value of the index-th pair (sorted by value)
        return w_of_row[np.searchsorted(row_end, index, side="right")]

    if u.size:
        sums = np.add.reduceat(cnt * code, first).astype(np.float64) / 2.0
        edges = np.stack([u[first], v[first]], axis=1)
    else:
        sums = np.zeros(0)
        edges = np.zeros((0, 2), np.uint64)
    feats: dict[str, np.ndarray] = {
        "count": counts.astype(np.float64),
        "sum": sums,
        "mean": sums / np.maximum(counts, 1),
        "min": w_of_row[first] if u.size else np.zeros(0),
        "max": w_of_row[last] if u.size else np.zeros(0),
    }
    for q in QUANTILES:  # as region_adjacency_graph: numpy's "linear" quantile per face
        pos = starts + q * (counts - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, starts + counts - 1)
        frac = pos - lo
        feats[f"q{round(q * 100)}"] = w(lo) * (1 - frac) + w(hi) * frac if u.size else np.zeros(0)
    feats["size_u"] = node_sizes[np.searchsorted(nodes, edges[:, 0])].astype(np.float64)
    feats["size_v"] = node_sizes[np.searchsorted(nodes, edges[:, 1])].astype(np.float64)
    return _scaled(RegionAdjacencyGraph(edges.astype(np.uint64), feats, nodes, node_sizes))


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.uint64), np.zeros((0, 2), np.uint64)


def graph_blockwise(
    fragments: Any,
    boundary: Any,
    *,
    block_shape: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    progress: bool = True,
) -> RegionAdjacencyGraph:
    """The region adjacency graph of a volume of any size, reduced block by block.

    Parameters
    ----------
    fragments : (Z, Y, X) or (Y, X) integer array, zarr array, LazyImage or path
        Globally unique supervoxels (e.g. :func:`fragments_blockwise`); 0 is
        ignored.
    boundary : array of float in [0, 1] or uint8, same shape
        Boundary map, quantised per block with :func:`quantise_boundary`.
    block_shape, n_workers, scheduler, progress
        As for :func:`emseg.blockwise.reduce_blocks`.

    Returns
    -------
    RegionAdjacencyGraph
        Bit for bit equal to :func:`boundary_graph` of the whole volume, for
        any block shape. Memory: the sparse table ``(u, v, code, count)``
        (at most 511 rows per pair of adjacent fragments) and the fragment
        sizes, never the voxels.
    """
    arrays, names = _normalize_inputs([fragments, boundary])
    check_inputs(arrays, names)
    check_label_dtype(arrays[0], name="fragments")
    table, sizes = reduce_blocks(
        _block_table,
        arrays,
        merge=_merge,
        empty=_empty(),
        halo=1,
        block_shape=block_shape,
        pass_block=True,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=progress,
    )
    return _graph_from_table(table, sizes)


# ---------------------------------------------------------------------------
# pass 1: fragments


class _Fragments(_Named):
    """Block function: supervoxels of the read region, cropped, with globally unique ids."""

    def __init__(self, budget: int, options: dict[str, Any]) -> None:
        self.budget = int(budget)
        self.options = dict(options)

    def __call__(self, boundary: np.ndarray, *, block: Any) -> np.ndarray:
        values = dequantise(quantise_boundary(boundary))
        frag = supervoxels(values, **self.options)[block.write_in_read]
        ids, inv = np.unique(frag, return_inverse=True)
        local = np.arange(ids.size, dtype=np.uint64) + np.uint64(ids[0] != 0)  # 0 stays 0
        glob = np.where(local > 0, local + np.uint64(block.block_id * self.budget), 0)
        return glob.astype(np.uint64)[inv.reshape(frag.shape)]


def _supervoxel_options(
    spacing: tuple[float, ...],
    seeds: str,
    sigma_nm: float | None,
    min_seed_distance_nm: float,
    threshold: float,
) -> dict[str, Any]:
    return {
        "spacing": [float(s) for s in spacing],
        "seeds": seeds,
        "sigma_nm": None if sigma_nm is None else float(sigma_nm),
        "min_seed_distance_nm": float(min_seed_distance_nm),
        "threshold": float(threshold),
    }


def fragments_blockwise(
    boundary: Any,
    *,
    out: Any = None,
    halo: int | Sequence[int] = 0,
    spacing: Any = None,
    seeds: str = "minima",
    sigma_nm: float | None = None,
    min_seed_distance_nm: float = 0.0,
    seed_threshold: float = 0.5,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Supervoxels of a boundary map of any size, per block, with globally unique ids.

    Each block runs :func:`~emseg.instance.supervoxels` on its read region
    (write region + `halo`) of the quantised map ``round(255 p) / 255``
    (float32) and keeps the write region; fragments are cut at block faces.
    Block ``b``'s ids are ``b * prod(block_shape) + 1, 2, ...``. A volume that
    is one block gives exactly the in-memory ``supervoxels`` of the quantised
    map.

    Parameters
    ----------
    boundary : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        Boundary probability in [0, 1] (high = membrane), or uint8 levels.
    halo : int or tuple of int, default 0
        Context voxels on each side of a block for the seeds and the flood.
    spacing, seeds, sigma_nm, min_seed_distance_nm
        As for :func:`~emseg.instance.supervoxels`.
    seed_threshold : float, default 0.5
        ``threshold`` of :func:`~emseg.instance.supervoxels` (``seeds="distance"``).
    out, block_shape, chunks, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks`.

    Returns
    -------
    zarr.Array of uint64
        Fragments, every voxel in one (0 nowhere).
    """
    arrays, _ = _normalize_inputs(boundary)
    shape = tuple(int(s) for s in arrays[0].shape)
    sp = input_spacing(arrays[0], spacing, len(shape))
    out_chunks = resolve_chunks(out, chunks, shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, out_chunks)
    blocking = Blocking(shape, block_shape, halo=halo)
    opts = _supervoxel_options(sp, seeds, sigma_nm, min_seed_distance_nm, seed_threshold)
    return map_blocks(
        _Fragments(math.prod(blocking.block_shape), opts),
        arrays[0],
        out=out,
        halo=halo,
        dtype=np.uint64,
        block_shape=blocking.block_shape,
        chunks=out_chunks,
        spacing=sp,
        labels=True,
        pass_block=True,
        n_workers=n_workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        params={"method": "fragments", **opts},
    )


# ---------------------------------------------------------------------------
# passes 2 and 4 as journaled tasks of the final output


class _EdgesTask:
    """Pass 2: the block's table and sizes, kept in the output's journal."""

    def __init__(self, inputs: list[Any], blocking: Blocking, journal: Journal) -> None:
        self.inputs, self.blocking, self.journal = inputs, blocking, journal

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        data = [read_block(a, block.read_roi) for a in self.inputs]
        table, sizes = _block_table(*data, block=block)
        self.journal.mark_done("edges", block_id, table)
        self.journal.mark_done("sizes", block_id, sizes)  # last: the block is done


class _RelabelTask:
    """Pass 4: fragments -> segments of the write region (every fragment is a graph node)."""

    def __init__(
        self, fragments: Any, out: Any, blocking: Blocking, journal: Journal, remap: _Remap
    ) -> None:
        self.fragments, self.out, self.blocking = fragments, out, blocking
        self.journal, self.remap = journal, remap

    def __call__(self, block_id: int) -> None:
        roi = self.blocking[block_id].write_roi
        self.out[roi.to_slices()] = self.remap(read_block(self.fragments, roi))
        self.journal.mark_done("relabel", block_id)


def _load_classifier(edge_classifier: Any) -> tuple[Any, str | None]:
    if edge_classifier is None:
        return None, None
    if isinstance(edge_classifier, str | os.PathLike):
        from emseg.instance._edges import load_edge_classifier

        return load_edge_classifier(edge_classifier), str(edge_classifier)
    if not hasattr(edge_classifier, "merge_probability"):
        raise EmsegTypeError(
            "`edge_classifier` must be an EdgeClassifier or the path of one "
            f"(save_edge_classifier); got {type(edge_classifier).__name__}."
        )
    import hashlib
    import pickle

    try:  # the same classifier resumes the same job; another one is refused
        digest = hashlib.sha1(pickle.dumps(edge_classifier)).hexdigest()[:16]
    except (pickle.PicklingError, TypeError, AttributeError):  # unpicklable: never resumable
        digest = f"id{id(edge_classifier):x}"
    return edge_classifier, f"{type(edge_classifier).__name__}[{digest}]"


def agglomerate_blockwise(
    boundary: Any,
    *,
    fragments: Any = None,
    out: Any = None,
    halo: int | Sequence[int] = 0,
    threshold: float,
    edge_classifier: Any = None,
    merge_small_nm3: float | None = None,
    linkage: Linkage = "mean",
    spacing: Any = None,
    seeds: str = "minima",
    sigma_nm: float | None = None,
    min_seed_distance_nm: float = 0.0,
    seed_threshold: float = 0.5,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Supervoxels + agglomeration of a volume of any size, on one global graph.

    Fragments per block (:func:`fragments_blockwise`, or `fragments`), one
    global region adjacency graph reduced block by block
    (:func:`graph_blockwise`), one :func:`~emseg.instance.agglomerate_graph`,
    then a blockwise relabelling (see :mod:`emseg.instance._graph_blockwise`).

    Parameters
    ----------
    boundary : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        Boundary probability in [0, 1] (high = membrane), or uint8 levels
        ``round(255 p)``. A float map is quantised to those levels first
        (as ``emseg segment`` stores it); fragments and edges use ``q / 255``.
    fragments : array, optional
        Globally unique supervoxels (e.g. a shipped over-segmentation);
        computed by :func:`fragments_blockwise` (into ``<out>.scratch``)
        otherwise.
    halo : int or tuple of int, default 0
        Context voxels of the fragments pass (not needed for exactness of the
        graph, which reads one plane more per block by itself).
    threshold : float in [0, 1]
        Merge while the lowest mean edge weight (mean boundary, or ``1 - p``
        with `edge_classifier`) is below it.
    edge_classifier : EdgeClassifier or path, optional
        Learned edges: weights ``1 - merge_probability`` of the global graph.
    merge_small_nm3 : float, optional
        Then merge segments smaller than this (nm^3; nm^2 in 2D) into the
        neighbour with the lowest mean edge weight (``merge_small`` of
        :func:`~emseg.instance.agglomerate_graph`, sizes from the global graph).
    linkage : {"mean", "multicut"}, default "mean"
        As for :func:`~emseg.instance.agglomerate_graph`: "multicut" merges by
        greedy additive contraction of signed costs (faces below `threshold`
        attract), on the same global graph.
    spacing, seeds, sigma_nm, min_seed_distance_nm, seed_threshold
        As for :func:`fragments_blockwise`.
    out, block_shape, chunks, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks`; a killed job resumes with
        `resume` (fragments, edges and relabelling keep their finished blocks).

    Returns
    -------
    zarr.Array of uint64
        Segments ``1..N`` in order of their smallest fragment id; attribute
        ``emseg`` holds ``n_labels``, ``n_fragments``, ``n_edges`` and the
        parameters. Equal to ``agglomerate_graph(boundary_graph(F, boundary),
        merge_small=..., linkage=...)`` applied to the assembled fragments ``F`` (bit for bit, any block
        shape or scheduler); for a volume of one block (and no `fragments`),
        equal to the in-memory ``supervoxels`` + that agglomeration.
    """
    arrays, names = _normalize_inputs(boundary)
    shape = check_inputs(arrays, names)
    ndim = len(shape)
    sp = input_spacing(arrays[0], spacing, ndim)
    t = check_threshold(threshold, name="threshold")
    if not 0.0 <= t <= 1.0:
        raise EmsegValueError(
            f"`threshold` must be in [0, 1] (mean boundary probability, uint8 maps read as "
            f"q / 255); got {threshold!r}. For levels 0..255 divide by 255."
        )
    bnd_dtype = np.dtype(arrays[0].dtype)
    if bnd_dtype != np.uint8 and bnd_dtype.kind != "f":
        raise EmsegTypeError(
            f"`boundary` must be a float map in [0, 1] or uint8 levels; got dtype {bnd_dtype}."
        )
    small = merge_small_voxels(merge_small_nm3, spacing=sp, ndim=ndim)
    check_linkage(linkage, t)
    clf, clf_name = _load_classifier(edge_classifier)
    if fragments is not None:
        frag_arrays, _ = _normalize_inputs(fragments)
        check_inputs([arrays[0], frag_arrays[0]], [names[0], "fragments"])
        check_label_dtype(frag_arrays[0], name="fragments")
    if _check_out(out, resume, overwrite):
        return _open_out(out)
    out_chunks = resolve_chunks(out, chunks, shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, out_chunks)
    blocking = Blocking(shape, block_shape, halo=1)
    opts = _supervoxel_options(sp, seeds, sigma_nm, min_seed_distance_nm, seed_threshold)
    job: dict[str, Any] = {
        "job": "agglomerate_blockwise",
        "shape": list(shape),
        "block_shape": list(blocking.block_shape),
        "threshold": t,
        "edges": "learned" if clf is not None else "mean",
        "edge_classifier": clf_name,
        "fragments": "given" if fragments is not None else {"halo": halo, **opts},
    }
    if small:  # absent when off: jobs and outputs without it are unchanged
        job["merge_small_nm3"] = float(merge_small_nm3 or 0.0)
    if linkage != "mean":  # likewise
        job["linkage"] = linkage
    run: dict[str, Any] = {"n_workers": n_workers, "scheduler": scheduler, "progress": progress}
    seconds: dict[str, float] = {}
    scratch = _Scratch(out, resume)
    output = prepare_output(
        out,
        shape=shape,
        dtype=np.uint64,
        chunks=out_chunks,
        spacing=sp,
        labels=True,
        params=job,
        resume=resume,
        overwrite=overwrite,
    )
    if output.journal.complete:
        return output.array
    journal = output.journal
    t0 = time.perf_counter()
    if fragments is None:  # pass 1, a job of its own (journal beside `out`)
        frag = fragments_blockwise(
            arrays[0],
            halo=halo,
            spacing=sp,
            seeds=seeds,
            sigma_nm=sigma_nm,
            min_seed_distance_nm=min_seed_distance_nm,
            seed_threshold=seed_threshold,
            block_shape=blocking.block_shape,
            chunks=out_chunks,
            **run,
            **scratch.kwargs("fragments"),
        )
    else:
        frag = frag_arrays[0]
    seconds["fragments"] = time.perf_counter() - t0
    with open_backend(scheduler, n_workers) as backend:
        check_chunk_alignment(blocking, out_chunks, parallel=backend.parallel)

        t0 = time.perf_counter()
        n_blocks = len(blocking)
        run_blocks(
            _EdgesTask([frag, arrays[0]], blocking, journal),
            output.todo("sizes", n_blocks),
            backend,
            progress=progress,
            desc="agglomerate 2/4 edges",
        )
        reducer = TreeReducer(_merge)
        for bid in range(n_blocks):
            tab, siz = journal.summary("edges", bid), journal.summary("sizes", bid)
            reducer.add((tab.reshape(-1, 4), siz.reshape(-1, 2)))  # type: ignore[union-attr]
        table, sizes = reducer.result(_empty())
        rag = _graph_from_table(table, sizes)
        seconds["edges"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        weights = None if clf is None else 1.0 - clf.merge_probability(rag)
        agg = agglomerate_graph(
            rag,
            threshold=t,
            edge_weights=weights,
            merge_small=small,
            linkage=linkage,
        )
        seconds["agglomerate"] = time.perf_counter() - t0
        log.info(
            "agglomerate_blockwise: %d fragments, %d edges (%d table rows) -> %d segments",
            rag.nodes.size,
            rag.edges.shape[0],
            table.shape[0],
            int(agg.segment.max()) if agg.segment.size else 0,
        )

        t0 = time.perf_counter()
        run_blocks(
            _RelabelTask(frag, output.array, blocking, journal, _Remap(agg.nodes, agg.segment)),
            output.todo("relabel", n_blocks),
            backend,
            progress=progress,
            desc="agglomerate 4/4 relabel",
        )
        seconds["relabel"] = time.perf_counter() - t0
    finish_output(output, job)
    scratch.remove()
    attrs = dict(output.array.attrs["emseg"])
    attrs.update(
        n_labels=int(agg.segment.max()) if agg.segment.size else 0,
        n_fragments=int(rag.nodes.size),
        n_edges=int(rag.edges.shape[0]),
        method="agglomerate",
        params={k: v for k, v in job.items() if k != "job"},
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )
    output.array.attrs["emseg"] = attrs
    return output.array
