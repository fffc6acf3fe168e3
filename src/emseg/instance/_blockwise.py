"""Instance segmentation of volumes of any size through :mod:`emseg.blockwise`.

Two kinds of guarantee (``docs/instance.md``):

* **exact** (equal to the in-memory result up to a renumbering, VOI = 0, for
  any block shape): :func:`components_blockwise` (the engine's exact label
  stitching, then hysteresis, hole filling and size filters from global
  per-label tables) and :func:`link_sections_blockwise` (section sizes and
  overlaps between neighbouring sections add up exactly across blocks, the
  Hungarian matching then runs once on the global tables);
* **exact where objects fit** (:func:`watershed_blockwise`,
  :func:`agglomerate_blockwise`, :func:`mutex_watershed_blockwise`): each
  block is segmented on its read region (write region + `halo`); the objects
  that meet the write region get global ids, and an object of block A is
  merged with an object of a neighbouring block B when, inside A's halo,
  A's view of the object and B's object have IoU > 0.5. When the in-memory
  method gives, on each read region, the in-memory objects for every object
  meeting the write region (distance watershed: every foreground component
  meeting a block lies inside its read region; agglomeration / mutex
  watershed: the objects meeting a block and their neighbours do), both
  views coincide (IoU = 1) and the result equals the in-memory one.
  Otherwise the IoU rule joins objects at seams wherever both blocks agree
  on more than half of the overlap.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emseg.blockwise import label, reduce_blocks, relabel
from emseg.blockwise._execute import SchedulerLike
from emseg.blockwise._geometry import default_block_shape
from emseg.blockwise._map import _normalize_inputs, map_blocks
from emseg.blockwise._output import (
    check_inputs,
    input_spacing,
    resolve_chunks,
)
from emseg.errors import EmsegValueError
from emseg.instance._components import background_connectivity, parse_connectivity
from emseg.instance._validate import check_threshold, physical_size, to_voxels

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
    return reduce_blocks(  # type: ignore[no-any-return]
        _label_stats,
        inputs,
        merge=_merge_stats,
        empty=np.zeros((0, 3)),
        block_shape=block_shape,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=False,
    )


def _member(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Bool array: which voxels of `labels` hold one of the sorted `ids` (never 0)."""
    lab = labels.astype(np.uint64, copy=False)
    if ids.size == 0:
        return np.zeros(lab.shape, dtype=bool)
    idx = np.searchsorted(ids, lab).clip(max=ids.size - 1)
    return (ids[idx] == lab) & (lab != 0)


class _Background:
    """Block function: 1 where a voxel is not in a kept object."""

    def __init__(self, kept: np.ndarray) -> None:
        self.kept = np.sort(kept.astype(np.uint64))

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        return (~_member(self.kept, labels)).astype(np.uint8)


class _Filled:
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
    common = {"n_workers": n_workers, "scheduler": scheduler, "progress": progress}
    out_chunks = resolve_chunks(out, chunks, shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, out_chunks)
    blk = {"block_shape": block_shape, "chunks": out_chunks}
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
    min_vox = to_voxels(min_nm, sp)
    if min_vox > 1:
        keep &= stats[:, 1] >= min_vox
    keys, values = _mapping_for(ids, keep)
    result = relabel(
        labels,
        (keys, values),
        out=out,
        block_shape=block_shape,
        chunks=out_chunks,
        resume=resume,
        overwrite=overwrite,
        **common,
    )
    scratch.remove()
    attrs = dict(result.attrs.get("emseg", {}))
    attrs.update(
        n_labels=int(keep.sum()),
        method="components",
        params={
            "threshold": t,
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
