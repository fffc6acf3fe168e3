"""Instance segmentation of volumes of any size through :mod:`emseg.blockwise`.

Two kinds of guarantee (``docs/instance.md``):

* **exact** (equal to the in-memory result up to a renumbering, VOI = 0, for
  any block shape): :func:`components_blockwise` (the engine's exact label
  stitching, then hysteresis, hole filling and size filters from global
  per-label tables) and :func:`link_sections_blockwise` (section sizes and
  overlaps between neighbouring sections add up exactly across blocks, the
  Hungarian matching then runs once on the global tables);
* **exact where objects fit** (:func:`watershed_blockwise`,
  :func:`mutex_watershed_blockwise`): each
  block is segmented on its read region (write region + `halo`); the objects
  that meet the write region get global ids, and an object of block A is
  merged with an object of a neighbouring block B when, inside A's halo,
  A's view of the object and B's object have IoU > 0.5. When the in-memory
  method gives, on each read region, the in-memory objects for every object
  meeting the write region (distance watershed: every foreground component
  meeting a block lies inside its read region; mutex watershed: the objects
  meeting a block and their neighbours do), both
  views coincide (IoU = 1) and the result equals the in-memory one.
  Otherwise the IoU rule joins objects at seams wherever both blocks agree
  on more than half of the overlap.

Agglomeration (:func:`~emseg.instance.agglomerate_blockwise`) does not
stitch: it builds one global graph (:mod:`emseg.instance._graph_blockwise`).
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emseg._checks import check_label_dtype
from emseg.blockwise import (
    Blocking,
    Journal,
    SchedulerLike,
    check_chunk_alignment,
    check_inputs,
    default_block_shape,
    finish_output,
    input_spacing,
    label,
    map_blocks,
    merge_pairs,
    open_backend,
    prepare_output,
    read_block,
    reduce_blocks,
    resolve_chunks,
    run_blocks,
)
from emseg.blockwise import as_inputs as _normalize_inputs
from emseg.errors import EmsegValueError
from emseg.instance._components import background_connectivity, parse_connectivity
from emseg.instance._link2d import apply_links, link_tables, section_tables
from emseg.instance._mws import mutex_watershed
from emseg.instance._validate import check_threshold, physical_size, to_voxels
from emseg.instance._watershed import distance_watershed

# ---------------------------------------------------------------------------
# shared helpers


class _Scratch:
    """Intermediate arrays of a multi-pass job: beside `out` on disk, or in memory."""

    def __init__(self, out: Any, resume: bool) -> None:
        self.root: Path | None = None
        if isinstance(out, str | os.PathLike):
            p = Path(out)
            self.root = p.with_name(p.name + ".scratch")
            self.root.mkdir(parents=True, exist_ok=True)
        self.resume = resume

    def kwargs(self, name: str) -> dict[str, Any]:
        if self.root is None:
            return {"out": None}
        path = self.root / name
        again = self.resume and path.exists()
        return {"out": str(path), "resume": again, "overwrite": not again}

    def remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def _label_stats(labels: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """(K, 3) float64 rows (id, voxel count, max value) of the non-zero ids of a block."""
    lab = labels.ravel()
    fg = lab != 0
    ids, inv, counts = np.unique(lab[fg], return_inverse=True, return_counts=True)
    mx = np.full(ids.size, -np.inf)
    if values is not None and ids.size:
        np.maximum.at(mx, inv.ravel(), values.ravel()[fg].astype(np.float64))
    return np.stack([ids.astype(np.float64), counts.astype(np.float64), mx], axis=1)


def _merge_stats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rows = np.concatenate([a, b])
    ids, inv = np.unique(rows[:, 0], return_inverse=True)
    inv = inv.ravel()
    counts = np.bincount(inv, rows[:, 1], minlength=ids.size)
    mx = np.full(ids.size, -np.inf)
    np.maximum.at(mx, inv, rows[:, 2])
    return np.stack([ids, counts, mx], axis=1)


def _border_ids(labels: np.ndarray, *, block: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Ids of `labels` (one block) on the border of the whole volume."""
    found = [np.zeros(0, labels.dtype)]
    w = block.write_roi
    for axis in range(labels.ndim):
        if w.begin[axis] == 0:
            found.append(np.unique(np.take(labels, 0, axis=axis)))
        if w.end[axis] == shape[axis]:
            found.append(np.unique(np.take(labels, -1, axis=axis)))
    ids = np.unique(np.concatenate(found))
    return ids[ids != 0].astype(np.uint64)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.union1d(a, b)


def _mapping_for(ids: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Old ids -> consecutive new ids for kept ones, 0 for the others."""
    new = np.zeros(ids.size, dtype=np.uint64)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint64)
    return ids.astype(np.uint64), new


def _stats(
    labels: Any, values: Any, *, block_shape: Any, n_workers: int, scheduler: Any
) -> np.ndarray:
    inputs = [labels] if values is None else [labels, values]
    return reduce_blocks(
        _label_stats,
        inputs,
        merge=_merge_stats,
        empty=np.zeros((0, 3)),
        block_shape=block_shape,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=False,
    )


class _Named:
    """Block-function base class with a stable name for the job journal.

    The engine records a block function's name and compares it on resume;
    an instance's default repr holds its memory address, so it would never
    match. The name is the class name and a digest of the instance's arrays.
    """

    __qualname__: str

    def __repr__(self) -> str:
        import hashlib

        h = hashlib.sha1()
        for key, value in sorted(vars(self).items()):
            h.update(key.encode())
            h.update(
                np.asarray(value).tobytes()
                if isinstance(value, np.ndarray)
                else repr(value).encode()
            )
        return f"{type(self).__name__}[{h.hexdigest()[:16]}]"

    def __getattr__(self, name: str) -> Any:
        if name == "__qualname__":
            return repr(self)
        raise AttributeError(name)


class _Remap(_Named):
    """Block function: ids in `keys` become `values` (uint64); other ids stay."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(keys)
        self.keys = keys[order].astype(np.uint64)
        self.values = values[order].astype(np.uint64)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        lab = labels.astype(np.uint64, copy=True)
        if self.keys.size:
            idx = np.searchsorted(self.keys, lab).clip(max=self.keys.size - 1)
            hit = self.keys[idx] == lab
            lab[hit] = self.values[idx[hit]]
        return lab


def _check_out(out: Any, resume: bool, overwrite: bool) -> bool:
    """Refuse an existing output early (before any work); True when it is complete already."""
    from emseg.blockwise import is_complete
    from emseg.errors import OutputExistsError

    if not isinstance(out, str | os.PathLike) or not Path(out).exists():
        return False
    if resume and overwrite:
        raise EmsegValueError("`resume` and `overwrite` exclude each other; pass one of them.")
    if not resume and not overwrite:
        raise OutputExistsError(
            f"`out`={str(out)!r} already exists. Pass overwrite=True (--overwrite) to replace it, "
            "or resume=True (--resume) to finish an interrupted job."
        )
    if resume:
        import zarr

        node = zarr.open(str(out), mode="r")
        arr = node["0"] if isinstance(node, zarr.Group) else node
        return bool(is_complete(arr))
    return False


def _open_out(out: Any) -> Any:
    import zarr

    node = zarr.open(str(out), mode="r+")
    return node["0"] if isinstance(node, zarr.Group) else node


def _member(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Bool array: which voxels of `labels` hold one of the sorted `ids` (never 0)."""
    lab = labels.astype(np.uint64, copy=False)
    if ids.size == 0:
        return np.zeros(lab.shape, dtype=bool)
    idx = np.searchsorted(ids, lab).clip(max=ids.size - 1)
    return (ids[idx] == lab) & (lab != 0)


class _Background(_Named):
    """Block function: 1 where a voxel is not in a kept object."""

    def __init__(self, kept: np.ndarray) -> None:
        self.kept = np.sort(kept.astype(np.uint64))

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        return (~_member(self.kept, labels)).astype(np.uint8)


class _Filled(_Named):
    """Block function: 1 in kept objects and in the holes to fill."""

    def __init__(self, kept: np.ndarray, holes: np.ndarray) -> None:
        self.kept = np.sort(kept.astype(np.uint64))
        self.holes = np.sort(holes.astype(np.uint64))

    def __call__(self, labels: np.ndarray, bg_labels: np.ndarray) -> np.ndarray:
        return (_member(self.kept, labels) | _member(self.holes, bg_labels)).astype(np.uint8)


# ---------------------------------------------------------------------------
# components


def components_blockwise(
    probabilities: Any,
    *,
    out: Any = None,
    threshold: float = 0.5,
    high_threshold: float | None = None,
    spacing: Any = None,
    min_size_nm3: float | None = None,
    max_hole_nm3: float | None = None,
    fill_all_holes: bool = False,
    connectivity: int | None = None,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """:func:`~emseg.instance.threshold_components` on a volume of any size, exactly.

    Parameters
    ----------
    probabilities : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        Foreground probability (or a mask: foreground ``> threshold``).
    out : str, path, zarr.Array or None
        The uint64 label output (OME-Zarr for a ``.zarr`` path); intermediate
        arrays go to ``<out>.scratch`` and are removed at the end.
    threshold, high_threshold, min_size_nm3, max_hole_nm3, fill_all_holes, connectivity
        As for :func:`~emseg.instance.threshold_components` (sizes in nm^3,
        nm^2 in 2D).
    spacing : sequence of float, optional
        Voxel size (nm); the input's by default.
    block_shape, chunks, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks`.

    Returns
    -------
    zarr.Array of uint64
        Objects ``1..N``; equal to the in-memory result up to a renumbering
        (VOI = 0) for any block shape: components come from the engine's
        exact label stitching, and hysteresis, hole and size filters from
        global per-label tables (reductions over the stitched labels).
    """
    arrays, names = _normalize_inputs(probabilities)
    img = arrays[0]
    shape = check_inputs(arrays, names)
    ndim = len(shape)
    sp = input_spacing(img, spacing, ndim)
    t = check_threshold(threshold, name="threshold")
    conn = parse_connectivity(connectivity, ndim)
    min_nm = physical_size(min_size_nm3, name="min_size_nm3", spacing=sp, ndim=ndim)
    hole_nm = physical_size(max_hole_nm3, name="max_hole_nm3", spacing=sp, ndim=ndim)
    high = (
        None if high_threshold is None else check_threshold(high_threshold, name="high_threshold")
    )
    if high is not None and high < t:
        raise EmsegValueError(
            f"`high_threshold` ({high}) must be >= `threshold` ({t}) for hysteresis."
        )
    if _check_out(out, resume, overwrite):
        return _open_out(out)
    common: dict[str, Any] = {"n_workers": n_workers, "scheduler": scheduler, "progress": progress}
    out_chunks = resolve_chunks(out, chunks, shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, out_chunks)
    blk: dict[str, Any] = {"block_shape": block_shape, "chunks": out_chunks}
    min_vox = to_voxels(min_nm, sp)
    if high is None and hole_nm is None and not fill_all_holes:
        # plain components, with or without a size filter: the engine's stitched
        # labels are the result (it sums the pieces' sizes in its merge and maps
        # small objects to 0 in its last pass: no scratch labels, no extra pass)
        result = label(
            img,
            out=out,
            threshold=t,
            connectivity=conn,
            spacing=sp,
            min_size=min_vox if min_vox > 1 else 0,
            resume=resume,
            overwrite=overwrite,
            **blk,
            **common,
        )
        return _annotate(
            result,
            int(result.attrs["emseg"]["n_labels"]),
            t,
            high,
            min_nm,
            hole_nm,
            fill_all_holes,
            conn,
            sp,
        )
    scratch = _Scratch(out, resume)
    labels = label(
        img, threshold=t, connectivity=conn, spacing=sp, **blk, **common, **scratch.kwargs("fg")
    )
    stats = _stats(
        labels,
        img if high is not None else None,
        block_shape=block_shape,
        n_workers=n_workers,
        scheduler=scheduler,
    )
    ids = stats[:, 0].astype(np.uint64)
    keep = np.ones(ids.size, dtype=bool) if high is None else stats[:, 2] > high
    if fill_all_holes or hole_nm is not None:
        kept_ids = ids[keep]
        bg = map_blocks(
            _Background(kept_ids),
            labels,
            dtype=np.uint8,
            spacing=sp,
            **blk,
            **common,
            **scratch.kwargs("bg"),
        )
        bg_labels = label(
            bg,
            connectivity=background_connectivity(conn, ndim),
            spacing=sp,
            **blk,
            **common,
            **scratch.kwargs("bg_labels"),
        )
        bstats = _stats(
            bg_labels, None, block_shape=block_shape, n_workers=n_workers, scheduler=scheduler
        )
        border = reduce_blocks(
            _border_ids,
            bg_labels,
            merge=_union,
            empty=np.zeros(0, np.uint64),
            block_shape=block_shape,
            pass_block=True,
            n_workers=n_workers,
            scheduler=scheduler,
            progress=False,
            kwargs={"shape": shape},
        )
        bids = bstats[:, 0].astype(np.uint64)
        hole = ~np.isin(bids, border)
        if not fill_all_holes:
            hole &= bstats[:, 1] <= int(hole_nm // math.prod(sp))  # type: ignore[operator]
        fg = map_blocks(
            _Filled(kept_ids, bids[hole]),
            [labels, bg_labels],
            dtype=np.uint8,
            spacing=sp,
            **blk,
            **common,
            **scratch.kwargs("filled"),
        )
        labels = label(fg, connectivity=conn, spacing=sp, **blk, **common, **scratch.kwargs("fg2"))
        stats = _stats(
            labels, None, block_shape=block_shape, n_workers=n_workers, scheduler=scheduler
        )
        ids = stats[:, 0].astype(np.uint64)
        keep = np.ones(ids.size, dtype=bool)
    if min_vox > 1:
        keep &= stats[:, 1] >= min_vox
    keys, values = _mapping_for(ids, keep)
    result = map_blocks(
        _Remap(keys, values),
        labels,
        out=out,
        dtype=np.uint64,
        labels=True,
        spacing=sp,
        block_shape=block_shape,
        chunks=out_chunks,
        resume=resume,
        overwrite=overwrite,
        **common,
    )
    scratch.remove()
    return _annotate(result, int(keep.sum()), t, high, min_nm, hole_nm, fill_all_holes, conn, sp)


def _annotate(
    result: Any,
    n_labels: int,
    threshold: float,
    high: float | None,
    min_nm: float | None,
    hole_nm: float | None,
    fill_all_holes: bool,
    conn: int,
    sp: tuple[float, ...],
) -> Any:
    """Record the method, its parameters and the object count in the output's attributes."""
    attrs = dict(result.attrs.get("emseg", {}))
    attrs.update(
        n_labels=n_labels,
        method="components",
        params={
            "threshold": threshold,
            "high_threshold": high,
            "min_size_nm3": min_nm,
            "max_hole_nm3": hole_nm,
            "fill_all_holes": fill_all_holes,
            "connectivity": conn,
            "spacing": list(sp),
        },
    )
    result.attrs["emseg"] = attrs
    return result


# ---------------------------------------------------------------------------
# per-block segmentation with a halo, stitched by IoU in the halo


class _SegmentTask:
    """Pass 1: segment the read region; objects meeting the write region get global ids."""

    def __init__(
        self,
        func: Callable[..., np.ndarray],
        inputs: Sequence[Any],
        out: Any,
        blocking: Blocking,
        journal: Journal,
        halos: Path,
        kwargs: dict[str, Any],
    ) -> None:
        self.func = func
        self.inputs = list(inputs)
        self.out = out
        self.blocking = blocking
        self.journal = journal
        self.halos = halos
        self.kwargs = kwargs
        self.budget = math.prod(blocking.block_shape)

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        data = [read_block(a, block.read_roi) for a in self.inputs]
        seg = np.asarray(self.func(*data, **self.kwargs)).astype(np.uint64, copy=False)
        inner = seg[block.write_in_read]
        ids = np.unique(inner)
        ids = ids[ids != 0]
        offset = np.uint64(block_id * self.budget)
        lut_keys = ids
        lut_vals = offset + np.arange(1, ids.size + 1, dtype=np.uint64)
        glob = np.zeros(seg.shape, dtype=np.uint64)
        if ids.size:
            idx = np.searchsorted(lut_keys, seg).clip(max=ids.size - 1)
            hit = (lut_keys[idx] == seg) & (seg != 0)
            glob[hit] = lut_vals[idx[hit]]
        self.out[block.write_roi.to_slices()] = glob[block.write_in_read]
        halo = glob.copy()
        halo[block.write_in_read] = 0
        tmp = self.halos / f".{block_id}.{uuid.uuid4().hex}.npz"
        with open(tmp, "wb") as f:
            np.savez_compressed(f, halo=halo)  # the write region is zeros: small on disk
        os.replace(tmp, self.halos / f"{block_id}.npz")
        self.journal.mark_done("segment", block_id, np.int64(ids.size))


class _PairsTask:
    """Pass 2: pairs (own object, neighbour's object) with IoU > `min_iou` inside the halo."""

    def __init__(
        self, out: Any, blocking: Blocking, journal: Journal, halos: Path, min_iou: float
    ) -> None:
        self.out = out
        self.blocking = blocking
        self.journal = journal
        self.halos = halos
        self.min_iou = min_iou

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        with np.load(self.halos / f"{block_id}.npz") as f:
            mine = f["halo"]
        theirs = np.asarray(self.out[block.read_roi.to_slices()]).astype(np.uint64)
        region = np.ones(mine.shape, dtype=bool)
        region[block.write_in_read] = False
        # which neighbouring block's write region each voxel lies in
        r = block.read_roi
        grid = np.ix_(
            *[
                (np.arange(b0, b0 + n) // bs).astype(np.uint64)
                for b0, n, bs in zip(r.begin, r.shape, self.blocking.block_shape, strict=True)
            ]
        )
        nb = np.zeros(mine.shape, dtype=np.uint64)
        for axis, g in enumerate(grid):
            nb = nb * np.uint64(self.blocking.grid_shape[axis]) + g
        a, b, n = mine[region], theirs[region], nb[region]
        pairs = np.zeros((0, 2), np.uint64)
        both = (a != 0) & (b != 0)
        if both.any():
            # sizes of my objects per neighbouring block, of theirs (each in one block)
            ka, na = np.unique(np.stack([a[a != 0], n[a != 0]], 1), axis=0, return_counts=True)
            ub, nbb = np.unique(b[b != 0], return_counts=True)
            trip = np.stack([a[both], b[both], n[both]], 1)
            keys, inter = np.unique(trip, axis=0, return_counts=True)
            view = [("a", np.uint64), ("n", np.uint64)]
            rows = np.ascontiguousarray(ka).view(view).ravel()
            q = np.ascontiguousarray(keys[:, [0, 2]]).view(view).ravel()
            sa = na[np.searchsorted(rows, q)]
            sb = nbb[np.searchsorted(ub, keys[:, 1])]
            iou = inter / (sa + sb - inter)
            pairs = keys[iou > self.min_iou][:, :2].astype(np.uint64)
        self.journal.mark_done("pairs", block_id, pairs)


class _FinalTask:
    """Pass 3: replace the block's global ids by the final consecutive ids."""

    def __init__(
        self,
        out: Any,
        blocking: Blocking,
        journal: Journal,
        counts: np.ndarray,
        nodes: np.ndarray,
        roots: np.ndarray,
        removed: np.ndarray,
    ) -> None:
        self.out = out
        self.blocking = blocking
        self.journal = journal
        self.prefix = np.concatenate([[0], np.cumsum(counts, dtype=np.uint64)[:-1]]).astype(
            np.uint64
        )
        self.nodes, self.roots, self.removed = nodes, roots, removed
        self.budget = np.uint64(math.prod(blocking.block_shape))

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        data = np.asarray(self.out[block.write_roi.to_slices()]).astype(np.uint64)
        fg = data != 0
        ids = data[fg]
        r = ids.copy()
        if self.nodes.size:
            idx = np.searchsorted(self.nodes, ids).clip(max=self.nodes.size - 1)
            hit = self.nodes[idx] == ids
            r[hit] = self.roots[idx[hit]]
        b = (r - np.uint64(1)) // self.budget
        local = r - b * self.budget
        below = np.searchsorted(self.removed, r).astype(np.uint64)
        data[fg] = self.prefix[b.astype(np.int64)] + local - below
        self.out[block.write_roi.to_slices()] = data
        self.journal.mark_done("final", block_id)


def segment_blockwise(
    func: Callable[..., np.ndarray],
    inputs: Any,
    *,
    out: Any = None,
    halo: int | Sequence[int],
    min_iou: float = 0.5,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    spacing: Any = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    params: dict[str, Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Run an instance segmentation ``func`` per block with a halo and stitch by IoU.

    Parameters
    ----------
    func : callable
        ``func(*read_regions, **kwargs) -> labels`` of the read region's
        shape (any integer ids, 0 = background). Picklable for distributed
        schedulers (a module-level function).
    inputs : array or sequence of arrays
        As for :func:`emseg.blockwise.map_blocks`.
    halo : int or tuple of int
        Context (voxels) on each side of a block; also the width of the
        overlap in which objects of neighbouring blocks are compared.
    min_iou : float, default 0.5
        Objects of two blocks are joined when their IoU inside the halo
        exceeds this (> 0.5 makes every join one-to-one).
    out, block_shape, chunks, spacing, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks`.

    Returns
    -------
    zarr.Array of uint64
        Objects ``1..N``; attribute ``emseg.n_labels``. See the module
        docstring for when this equals the in-memory result.
    """
    arrays, names = _normalize_inputs(inputs)
    shape = check_inputs(arrays, names)
    ndim = len(shape)
    if not 0 <= min_iou < 1:
        raise EmsegValueError(f"`min_iou` must be in [0, 1); got {min_iou!r}.")
    out_chunks = resolve_chunks(out, chunks, shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, out_chunks)
    blocking = Blocking(shape, block_shape, halo=halo)
    job: dict[str, Any] = {
        "job": "segment_blockwise",
        "func": f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}",
        "shape": list(shape),
        "halo": list(blocking.halo),
        "block_shape": list(blocking.block_shape),
        "min_iou": float(min_iou),
        **(params or {}),
    }
    with open_backend(scheduler, n_workers) as backend:
        check_chunk_alignment(blocking, out_chunks, parallel=backend.parallel)
        output = prepare_output(
            out,
            shape=shape,
            dtype=np.uint64,
            chunks=out_chunks,
            spacing=input_spacing(arrays[0], spacing, ndim),
            labels=True,
            params=job,
            resume=resume,
            overwrite=overwrite,
        )
        if output.journal.complete:
            return output.array
        journal = output.journal
        halos = journal.scratch("halos")
        halos.mkdir(exist_ok=True)
        n_blocks = len(blocking)

        run_blocks(
            _SegmentTask(func, arrays, output.array, blocking, journal, halos, dict(kwargs or {})),
            output.todo("segment", n_blocks),
            backend,
            progress=progress,
            desc="segment 1/3",
        )
        run_blocks(
            _PairsTask(output.array, blocking, journal, halos, float(min_iou)),
            output.todo("pairs", n_blocks),
            backend,
            progress=progress,
            desc="segment 2/3 stitch",
        )
        counts = np.zeros(n_blocks, dtype=np.uint64)
        for bid, s in journal.iter_summaries("segment"):
            counts[bid] = int(s) if s is not None else 0
        found = [s.reshape(-1, 2) for _, s in journal.iter_summaries("pairs") if s is not None]
        pairs = np.concatenate(found) if found else np.zeros((0, 2), np.uint64)
        nodes, roots, removed = merge_pairs(pairs.astype(np.uint64))
        n_labels = int(counts.sum()) - int(removed.size)
        run_blocks(
            _FinalTask(output.array, blocking, journal, counts, nodes, roots, removed),
            output.todo("final", n_blocks),
            backend,
            progress=progress,
            desc="segment 3/3 relabel",
        )
    finish_output(output, job)
    attrs = dict(output.array.attrs["emseg"])
    attrs["n_labels"] = n_labels
    output.array.attrs["emseg"] = attrs
    return output.array


def _distance_watershed_block(data: np.ndarray, **kwargs: Any) -> np.ndarray:
    return distance_watershed(data, **kwargs)


def _mws_block(*channels: np.ndarray, offsets: Any, **kwargs: Any) -> np.ndarray:
    return mutex_watershed(np.stack(channels), offsets, **kwargs)


_BLOCKWISE_DOC = """
    halo : int or tuple of int
        Context in voxels on each side of a block (see the guarantee in
        :mod:`emseg.instance._blockwise`: exact when the objects meeting a
        block, and what decides them, lie within the block + halo).
    out, block_shape, chunks, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks`.

    Returns
    -------
    zarr.Array of uint64
"""


def watershed_blockwise(
    image: Any,
    *,
    out: Any = None,
    halo: int | Sequence[int],
    threshold: float = 0.5,
    spacing: Any = None,
    min_seed_distance_nm: float,
    seeds: str = "distance",
    sigma_nm: float | None = None,
    min_seed_value: float | None = None,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """:func:`~emseg.instance.distance_watershed` per block, stitched by IoU in the halo.

    Exact (VOI = 0 against the in-memory result) when every foreground
    component that meets a block lies inside the block's read region
    (block + `halo`): the distance transform, seeds and flood of a
    component depend on that component only.

    Parameters
    ----------
    image, threshold, spacing, min_seed_distance_nm, seeds, sigma_nm, min_seed_value
        As for :func:`~emseg.instance.distance_watershed`.
    """
    arrays, _ = _normalize_inputs(image)
    sp = input_spacing(arrays[0], spacing, len(arrays[0].shape))
    kw = {
        "threshold": float(threshold),
        "spacing": list(sp),
        "min_seed_distance_nm": float(min_seed_distance_nm),
        "seeds": seeds,
        "sigma_nm": sigma_nm,
        "min_seed_value": min_seed_value,
    }
    return segment_blockwise(
        _distance_watershed_block,
        arrays[0],
        out=out,
        halo=halo,
        block_shape=block_shape,
        chunks=chunks,
        spacing=sp,
        n_workers=n_workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        params={"method": "watershed", **kw},
        kwargs=kw,
    )


def mutex_watershed_blockwise(
    affinities: Sequence[Any],
    offsets: Sequence[Sequence[int]],
    *,
    out: Any = None,
    halo: int | Sequence[int],
    n_attractive: int | None = None,
    repulsive_stride: int = 1,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    spacing: Any = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """:func:`~emseg.instance.mutex_watershed` per block, stitched by IoU in the halo.

    Parameters
    ----------
    affinities : sequence of C arrays (Z, Y, X), or a (C, Z, Y, X) numpy array
        One array per channel (e.g. ``[zarr_group["aff"][c] for c in ...]``).
    offsets, n_attractive, repulsive_stride
        As for :func:`~emseg.instance.mutex_watershed`. The halo should be at
        least the longest offset.
    """
    channels = list(affinities)
    offs = [[int(o) for o in off] for off in offsets]
    kw = {"offsets": offs, "n_attractive": n_attractive, "repulsive_stride": repulsive_stride}
    return segment_blockwise(
        _mws_block,
        channels,
        out=out,
        halo=halo,
        block_shape=block_shape,
        chunks=chunks,
        spacing=spacing,
        n_workers=n_workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        params={"method": "mws", **kw},
        kwargs=kw,
    )


# ---------------------------------------------------------------------------
# 2D -> 3D linking


def _section_tables_block(
    labels: np.ndarray, *, block: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sizes and overlaps (with the next section) of the write region's sections."""
    w = block.write_roi
    inner = labels[block.write_in_read]
    z_in = w.begin[0] - block.read_roi.begin[0]
    nxt = None
    if labels.shape[0] > z_in + inner.shape[0]:  # the section after the block is in the halo
        sl = list(block.write_in_read)
        sl[0] = slice(z_in + inner.shape[0], z_in + inner.shape[0] + 1)
        nxt = labels[tuple(sl)]
    return section_tables(inner, w.begin[0], with_next=nxt)


def _merge_tables(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    out = []
    for keys, counts in ((0, 1), (2, 3)):
        k = np.concatenate([a[keys], b[keys]])
        c = np.concatenate([a[counts], b[counts]])
        uk, inv = np.unique(k, axis=0, return_inverse=True)
        out += [
            uk.reshape(-1, k.shape[1]),
            np.bincount(inv.ravel(), c, uk.shape[0]).astype(np.int64),
        ]
    return tuple(out)


class _SectionComponents(_Named):
    """Block function: 2D components of each section (blocks span whole sections)."""

    def __init__(self, threshold: float, connectivity: int | None) -> None:
        self.threshold = threshold
        self.connectivity = connectivity

    def __call__(self, data: np.ndarray) -> np.ndarray:
        from emseg.instance._link2d import section_components

        return section_components(data, threshold=self.threshold, connectivity=self.connectivity)


class _ApplyLinks:
    """Pass: per-section ids -> 3D object ids."""

    def __init__(
        self,
        labels: Any,
        out: Any,
        blocking: Blocking,
        journal: Journal,
        keys: np.ndarray,
        objects: np.ndarray,
    ) -> None:
        self.labels, self.out, self.blocking, self.journal = labels, out, blocking, journal
        self.keys, self.objects = keys, objects

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        data = read_block(self.labels, block.write_roi)
        self.out[block.write_roi.to_slices()] = apply_links(
            data, block.write_roi.begin[0], self.keys, self.objects
        )
        self.journal.mark_done("link", block_id)


def link_sections_blockwise(
    sections: Any,
    *,
    out: Any = None,
    min_iou: float = 0.5,
    threshold: float | None = None,
    connectivity: int | None = None,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    spacing: Any = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """:func:`~emseg.instance.link_sections` on a stack of any size, exactly.

    Per-section sizes and the overlaps between neighbouring sections are
    exact sums over blocks; the Hungarian matching then runs once per pair
    of sections on these global tables and a last pass writes the 3D ids.
    With `threshold`, each section is first segmented by 2D components in
    blocks that span whole sections (``block_shape = (bz, Y, X)``).

    Parameters
    ----------
    sections : (Z, Y, X) array, zarr array, LazyImage or path
        Per-section instance labels, or a probability map with `threshold`.
    min_iou, threshold, connectivity
        As for :func:`~emseg.instance.link_sections`.
    out, block_shape, chunks, spacing, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks`.

    Returns
    -------
    zarr.Array of uint64
        3D objects; equal to :func:`~emseg.instance.link_sections` up to a
        renumbering (VOI = 0) for any block shape.
    """
    arrays, names = _normalize_inputs(sections)
    shape = check_inputs(arrays, names)
    if len(shape) != 3:
        raise EmsegValueError(f"`sections` must be a (Z, Y, X) stack; got shape {shape}.")
    iou = check_threshold(min_iou, name="min_iou")
    if not 0 < iou <= 1:
        raise EmsegValueError(f"`min_iou` must be in (0, 1]; got {min_iou!r}.")
    out_chunks = resolve_chunks(out, chunks, shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, out_chunks)
    sp = input_spacing(arrays[0], spacing, 3)
    scratch = _Scratch(out, resume)
    labels = arrays[0]
    if threshold is not None:
        t = check_threshold(threshold, name="threshold")
        bz = Blocking(shape, block_shape).block_shape[0]
        labels = map_blocks(
            _SectionComponents(t, connectivity),
            labels,
            dtype=np.uint32,
            block_shape=(bz, shape[1], shape[2]),
            chunks=(bz, shape[1], shape[2]),
            spacing=sp,
            labels=True,
            n_workers=n_workers,
            scheduler=scheduler,
            progress=progress,
            **scratch.kwargs("sections"),
        )
    else:
        check_label_dtype(labels, name="sections")
    empty = (
        np.zeros((0, 2), np.uint64),
        np.zeros(0, np.int64),
        np.zeros((0, 3), np.uint64),
        np.zeros(0, np.int64),
    )
    keys, sizes, ov_keys, ov = reduce_blocks(
        _section_tables_block,
        labels,
        merge=_merge_tables,
        empty=empty,
        halo=(1, 0, 0),
        block_shape=block_shape,
        pass_block=True,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=progress,
    )
    objects = link_tables(keys, sizes, ov_keys, ov, min_iou=iou)
    blocking = Blocking(shape, block_shape)
    job = {
        "job": "link_sections",
        "shape": list(shape),
        "min_iou": iou,
        "threshold": threshold,
        "block_shape": list(blocking.block_shape),
    }
    with open_backend(scheduler, n_workers) as backend:
        check_chunk_alignment(blocking, out_chunks, parallel=backend.parallel)
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
        if not output.journal.complete:
            run_blocks(
                _ApplyLinks(labels, output.array, blocking, output.journal, keys, objects),
                output.todo("link", len(blocking)),
                backend,
                progress=progress,
                desc="link sections",
            )
            finish_output(output, job)
    scratch.remove()
    attrs = dict(output.array.attrs["emseg"])
    attrs["n_labels"] = int(objects.max()) if objects.size else 0
    output.array.attrs["emseg"] = attrs
    return output.array
