"""Streaming reductions: each block returns a small summary, summaries merge in a tree.

The basis of exact metrics and morphometry on volumes that never fit in
memory: voxel counts, histograms, and sparse count tables (label sizes,
overlap / contingency tables) add up exactly across blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emseg.blockwise._execute import SchedulerLike, TreeReducer, open_backend, run_blocks
from emseg.blockwise._geometry import Blocking, Roi, default_block_shape
from emseg.blockwise._map import _normalize_inputs, read_block
from emseg.blockwise._output import check_inputs, default_chunks
from emseg.errors import EmsegTypeError


class _ReduceTask:
    def __init__(
        self,
        func: Callable[..., Any],
        inputs: Sequence[Any],
        blocking: Blocking,
        kwargs: dict[str, Any],
        pass_block: bool,
    ) -> None:
        self.func = func
        self.inputs = list(inputs)
        self.blocking = blocking
        self.kwargs = kwargs
        self.pass_block = pass_block

    def __call__(self, block_id: int) -> Any:
        block = self.blocking[block_id]
        data = [read_block(a, block.read_roi) for a in self.inputs]
        if self.pass_block:
            return self.func(*data, block=block, **self.kwargs)
        return self.func(*data, **self.kwargs)


def reduce_blocks(
    func: Callable[..., Any],
    inputs: Any,
    *,
    merge: Callable[[Any, Any], Any],
    empty: Any = None,
    halo: int | Sequence[int] = 0,
    block_shape: int | Sequence[int] | None = None,
    roi: Sequence[slice] | Roi | None = None,
    pass_block: bool = False,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    progress: bool = True,
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Summarise every block with ``func`` and merge the summaries with ``merge``.

    Parameters
    ----------
    func : callable
        ``func(*arrays, **kwargs) -> summary`` on the read region of each
        input (with ``block=`` the :class:`Block` too when `pass_block`).
        A summary must be small: it travels back from the worker.
    inputs : array or sequence of arrays, (Z, Y, X) or (Y, X)
        As for :func:`map_blocks`.
    merge : callable
        ``merge(a, b) -> summary``; associative and commutative (summaries
        arrive in completion order and merge pairwise as a tree). With integer
        summaries the result is exact; float sums may differ in the last bits
        between runs.
    empty : object, optional
        Returned when there are no blocks.
    halo, block_shape, roi, n_workers, scheduler, progress, kwargs
        As for :func:`map_blocks` (default block shape from the first input's
        chunks). A summary should only count the write region of its block
        (``block.write_in_read``) when `halo` > 0, or voxels are counted twice.

    Returns
    -------
    object
        The merged summary. At most ``log2(n_blocks) + 1`` partial summaries
        are held at once.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(100).reshape(10, 10)
    >>> int(reduce_blocks(np.sum, img, merge=lambda a, b: a + b, block_shape=3, progress=False))
    4950
    """
    if not callable(func) or not callable(merge):
        raise EmsegTypeError("`func` and `merge` must be callable.")
    arrays, names = _normalize_inputs(inputs)
    shape = check_inputs(arrays, names)
    if block_shape is None:
        chunks = getattr(arrays[0], "chunks", None)
        if not isinstance(chunks, tuple) or not all(isinstance(c, int) for c in chunks):
            chunks = default_chunks(shape)
        block_shape = default_block_shape(shape, chunks)
    blocking = Blocking(shape, block_shape, halo=halo, roi=roi)
    reducer = TreeReducer(merge)
    with open_backend(scheduler, n_workers) as backend:
        run_blocks(
            _ReduceTask(func, arrays, blocking, dict(kwargs or {}), pass_block),
            range(len(blocking)),
            backend,
            on_result=lambda _bid, summary: reducer.add(summary),
            progress=progress,
            desc=getattr(func, "__name__", "reduce"),
        )
    return reducer.result(empty)


@dataclass(frozen=True)
class SparseCounts:
    """A sparse count table: one row of ``keys`` (a label, or a tuple of labels) per count.

    Attributes
    ----------
    keys : (N, K) ndarray of uint64
        Sorted unique rows (K = 1 for label sizes, 2 for overlap tables).
    counts : (N,) ndarray of int64
        The voxel count of each row.
    """

    keys: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_arrays(cls, *arrays: np.ndarray) -> SparseCounts:
        """Count each distinct tuple of values at the same voxel of `arrays`."""
        stacked = np.stack([np.asarray(a, dtype=np.uint64).ravel() for a in arrays], axis=1)
        keys, counts = np.unique(stacked, axis=0, return_counts=True)
        return cls(keys, counts.astype(np.int64))

    def merge(self, other: SparseCounts) -> SparseCounts:
        """The table of both (counts of equal keys added)."""
        keys = np.concatenate([self.keys, other.keys])
        counts = np.concatenate([self.counts, other.counts])
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        return SparseCounts(uniq, np.bincount(inverse.ravel(), counts).astype(np.int64))

    def as_dict(self) -> dict[tuple[int, ...], int]:
        return {
            tuple(int(v) for v in k): int(c) for k, c in zip(self.keys, self.counts, strict=True)
        }


def _sparse_block(*arrays: np.ndarray) -> SparseCounts:
    return SparseCounts.from_arrays(*arrays)


def _merge_sparse(a: SparseCounts, b: SparseCounts) -> SparseCounts:
    return a.merge(b)


def count_overlaps(
    *arrays: Any,
    block_shape: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    progress: bool = True,
) -> SparseCounts:
    """Voxel counts of every distinct tuple of labels across aligned label volumes.

    With one array: the size of each label; with two (truth, prediction):
    the contingency (overlap) table every segmentation metric is built on.
    Exact for volumes of any size.

    Returns
    -------
    SparseCounts
        ``keys`` of shape (N, len(arrays)), uint64; ``counts`` int64.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[1, 1, 0], [2, 2, 2]])
    >>> count_overlaps(a, block_shape=1, progress=False).as_dict()
    {(0,): 1, (1,): 2, (2,): 3}
    """
    k = len(arrays)
    return reduce_blocks(
        _sparse_block,
        list(arrays),
        merge=_merge_sparse,
        empty=SparseCounts(np.zeros((0, k), np.uint64), np.zeros(0, np.int64)),
        block_shape=block_shape,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=progress,
    )


@dataclass(frozen=True)
class Histogram:
    """Voxel counts per bin (``counts``, int64) and the bin edges (``edges``, float64)."""

    counts: np.ndarray
    edges: np.ndarray


def _histogram_block(data: np.ndarray, *, edges: np.ndarray) -> np.ndarray:
    return np.histogram(data, bins=edges)[0].astype(np.int64)


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


def histogram(
    image: Any,
    *,
    bins: int | Sequence[float] = 256,
    range: tuple[float, float] | None = None,
    block_shape: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    progress: bool = True,
) -> Histogram:
    """Histogram of a volume of any size, equal to ``numpy.histogram``.

    `range` is required with an integer `bins` unless the dtype is 8 or 16-bit
    integer (then the dtype's full range is used).

    Returns
    -------
    Histogram
        ``counts`` (n_bins,) int64 and ``edges`` (n_bins + 1,) float64.
    """
    from emseg.errors import EmsegValueError

    arrays, _ = _normalize_inputs(image)
    dt = np.dtype(arrays[0].dtype)
    if isinstance(bins, int):
        if range is None:
            if (dt.kind in "ub" and dt.itemsize <= 2) or (dt.kind == "i" and dt.itemsize <= 2):
                info = np.iinfo(dt) if dt.kind != "b" else np.iinfo(np.uint8)
                range = (float(info.min), float(info.max) + 1)
            else:
                raise EmsegValueError(
                    f"`range` is needed for a histogram of dtype {dt} with `bins`={bins}: "
                    "pass range=(low, high) or explicit bin edges."
                )
        edges = np.linspace(range[0], range[1], bins + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    counts = reduce_blocks(
        _histogram_block,
        arrays[0],
        merge=_add,
        empty=np.zeros(len(edges) - 1, np.int64),
        block_shape=block_shape,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=progress,
        kwargs={"edges": edges},
    )
    return Histogram(counts, edges)
