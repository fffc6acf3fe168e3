"""Blockwise connected components with exact stitching, and blockwise relabelling.

:func:`label` runs three resumable passes over the volume:

1. *components*: per block, ``cc3d.connected_components`` of the foreground
   of the write region gives local ids ``1..n``; the global id of local id
   ``i`` of block ``b`` is ``b * budget + i`` (``budget`` = voxels per block),
   unique without coordination. The block keeps its count (journal) and one
   scratch file in the journal's scratch folder: its boundary planes (raw)
   followed by its local labels in the smallest dtype that holds ``n``
   (uint8 below 256 components), LZ4-compressed.
2. *faces*: per block and per axis, the block's first plane and the plane
   just below it (assembled from the last planes of the neighbours below,
   one voxel wider on every in-plane side, so that diagonal neighbours
   across edges and corners are seen) give the pairs of ids that touch
   under the requested connectivity. Every pair of adjacent voxels in
   different blocks crosses at least one block face and is found by the
   block that holds its upper voxel, so no connection is missed.
3. *relabel*: the pairs form a graph whose connected components (scipy's
   ``csgraph.connected_components``) are the merged objects; each takes the
   smallest of its ids, ids are renumbered to consecutive ``1..N``, and each
   block maps its stored local labels through a small table straight into
   the uint64 output, one chunk at a time (:class:`ChunkIO` writes local
   zarr chunks without zarr's per-chunk path). The uint64 output is written
   once; the input is read once; cc3d runs once per block.

Size filter (``min_size``): pass 1 also records the voxel count of each
local label (journal summary ``[n, size_1, ..., size_n]``), the merge adds
the pieces of each object at its root (:func:`_size_table`), and pass 3's
table maps the local ids of objects below ``min_size`` to 0 and renumbers
the kept ones ``1..N``: exact, with no pass more.

Memory: each worker thread reuses its own buffers from block to block (the
block's input, which becomes its mask and then its uint8 labels; in pass 3
its labels, one output chunk and a small index slab). cc3d holds the GIL for
a whole call, so it runs on one thread of the job (no parallelism is lost)
and its uint32 output is one reused buffer rather than one per worker. The
C heap is trimmed between passes and every few blocks of pass 3 (freed
buffers otherwise stay resident in the allocator's per-thread arenas). The
merge holds the ids that touch a block face (bounded by the blocks'
surface, not their volume) and one count per block.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import itertools
import logging
import math
import os
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emseg._checks import check_label_dtype
from emseg.blockwise._chunkio import ChunkIO
from emseg.blockwise._execute import SchedulerLike, describe_scheduler, open_backend, run_blocks
from emseg.blockwise._geometry import (
    Block,
    Blocking,
    Roi,
    check_chunk_alignment,
    default_block_shape,
)
from emseg.blockwise._journal import Journal
from emseg.blockwise._map import _normalize_inputs, map_blocks, read_block
from emseg.blockwise._output import (
    check_inputs,
    finish_output,
    input_spacing,
    prepare_output,
    resolve_chunks,
)
from emseg.errors import EmsegValueError

log = logging.getLogger(__name__)

#: Valid connectivities per number of dimensions, and the most diagonal steps across a face.
_CONNECTIVITY = {3: {6: 0, 18: 1, 26: 2}, 2: {4: 0, 8: 1}}


class _ThreadBuffers:
    """Arrays that the blocks run by one worker thread reuse.

    A block's uint32 labels and its output chunk are the same size in every
    block: allocating them anew per block makes the allocator fault in fresh
    pages (time) and fragment its arenas (resident memory that is never
    returned). Not pickled: each process makes its own.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._local = threading.local()

    def get(self, name: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """An uninitialised array of `shape` and `dtype`, this thread's own."""
        dtype = np.dtype(dtype)
        size = math.prod(shape) * dtype.itemsize
        cache = self._local.__dict__
        raw = cache.get(name)
        if raw is None or raw.size < size:
            cache.pop(name, None)
            raw = cache[name] = np.empty(max(size, 1), dtype=np.uint8)
        return raw[:size].view(dtype).reshape(tuple(shape))


def parse_connectivity(connectivity: int | None, ndim: int) -> int:
    """Return `connectivity` checked for `ndim` (None = full: 26 in 3D, 8 in 2D)."""
    valid = _CONNECTIVITY[ndim]
    if connectivity is None:
        return max(valid)
    if connectivity not in valid:
        raise EmsegValueError(
            f"`connectivity` must be one of {sorted(valid)} for a {ndim}D volume; "
            f"got {connectivity!r}."
        )
    return int(connectivity)


def foreground(
    data: np.ndarray, threshold: float | None, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Foreground voxels: ``data > threshold``, or ``data != 0`` without a threshold.

    With `out` (a bool array of the shape of `data`), the mask is written into it.
    """
    if threshold is None:
        return np.not_equal(data, 0, out=out)
    return np.greater(data, threshold, out=out)


def _small_dtype(n: int) -> np.dtype:
    """The smallest unsigned dtype that holds the ids ``0..n``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


@functools.cache
def _cc3d_thread() -> cf.ThreadPoolExecutor:
    """The one thread of this process that runs cc3d (created on first use, kept).

    cc3d holds the GIL for a whole call, so two worker threads never run it
    at the same time anyway; running every call on one thread costs nothing
    in parallelism and keeps its large output (uint32, 4 bytes per voxel of
    the block) in one allocator arena, reused from block to block, instead
    of one such buffer kept resident per worker thread.
    """
    return cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="emseg-cc3d")


def _cc3d_uint8(
    mask: np.ndarray, connectivity: int, dest: np.ndarray | None
) -> tuple[np.ndarray, int]:
    """cc3d of a uint8 mask; with fewer than 256 components and `dest`, the ids copied into it."""
    import cc3d

    labels, n = cc3d.connected_components(  # type: ignore[call-overload]
        mask, connectivity=connectivity, return_N=True
    )
    n = int(n)
    if dest is not None and n <= 255:
        np.copyto(dest, labels, casting="unsafe")  # ids <= n: exact
        return dest, n  # cc3d's array is freed here, on this thread
    return labels, n


def _block_components(
    image: Any,
    block: Block,
    threshold: float | None,
    connectivity: int,
    reader: ChunkIO | None = None,
    buffers: _ThreadBuffers | None = None,
    *,
    cc3d_thread: cf.ThreadPoolExecutor | None = None,
) -> tuple[np.ndarray, int]:
    """cc3d of the block's foreground: local ids 1..n in raster order of first voxels.

    The labels come back in the smallest dtype that holds ``n`` (uint8 for
    fewer than 256 components): the copies that pass 1 stores and pass 3
    reads back are then 2-4x smaller than cc3d's uint16 / uint32 output.
    With `buffers`, the input, the mask and the labels use this thread's
    reused arrays (the labels are valid until the thread's next block), and
    cc3d runs on `cc3d_thread` (default: this process's, :func:`_cc3d_thread`).
    """
    shape = block.write_roi.shape
    if buffers is not None and reader is not None:
        data = reader.read(
            block.write_roi.to_slices(), out=buffers.get("input", shape, reader.dtype)
        )
    else:
        data = read_block(image, block.write_roi, reader=reader)
    mask = None
    # a one-byte input read into this thread's buffer becomes its own mask
    # (elementwise, in place), and then holds the uint8 labels: one or two
    # block-sized arrays less per worker
    own = buffers is not None and reader is not None and data.dtype.itemsize == 1
    if buffers is not None:
        mask = data.view(np.bool_) if own else buffers.get("mask", shape, np.bool_)
    fg = foreground(data, threshold, out=mask)
    # The mask is passed as uint8 (a view, no copy), never as bool: cc3d 4.1's
    # binary path (bool input or binary_image=True) mislabels background in 2D
    # with 8-connectivity and can fail in 3D with 26 (tested in test_labels.py).
    if buffers is None:
        labels, n = _cc3d_uint8(fg.view(np.uint8), connectivity, None)
    else:
        dest = data.view(np.uint8) if own else buffers.get("small", shape, np.uint8)
        thread = cc3d_thread if cc3d_thread is not None else _cc3d_thread()
        job = thread.submit(_cc3d_uint8, fg.view(np.uint8), connectivity, dest)
        labels, n = job.result()
    dtype = _small_dtype(n)
    if labels.dtype == dtype:
        return labels, n
    if buffers is None:
        small = np.empty(shape, dtype)
    else:
        small = buffers.get("small", shape, dtype)
    np.copyto(small, labels, casting="unsafe")  # ids <= n: exact
    return small, n


class _ComponentsTask:
    """Pass 1: count a block's components; keep its boundary planes and labels (local ids)."""

    def __init__(
        self,
        image: Any,
        faces: Path,
        blocking: Blocking,
        journal: Journal,
        threshold: float | None,
        connectivity: int,
        *,
        sizes: bool = False,
    ) -> None:
        self.image = image
        self.faces = faces
        self.blocking = blocking
        self.journal = journal
        self.threshold = threshold
        self.connectivity = connectivity
        #: also record the voxel count of each local label (for a size filter)
        self.sizes = sizes
        self.reader = ChunkIO.of(image)  # None: read through zarr / numpy
        self.buffers = _ThreadBuffers()
        #: the thread that runs cc3d: the job's own (set by label, shut down after
        #: the pass), or None for this process's (:func:`_cc3d_thread`)
        self.cc3d: cf.ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["cc3d"] = None  # a thread does not travel: a worker process uses its own
        return state

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        labels, n = _block_components(
            self.image,
            block,
            self.threshold,
            self.connectivity,
            self.reader,
            self.buffers,
            cc3d_thread=self.cc3d,
        )
        _save_block(self.faces / f"{block_id}.block", labels, _plane_dtype(self.blocking))
        if self.sizes:
            # summary: [n, size of local id 1, ..., size of local id n]
            summary = _local_sizes(labels, n)
            summary[0] = n
            self.journal.mark_done("components", block_id, summary)
        else:
            self.journal.mark_done("components", block_id, np.int64(n))


def _local_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel counts of the ids ``0..n`` of `labels` (int64, length ``n + 1``).

    Counted a few planes at a time: ``np.bincount`` converts its input to
    intp (8 bytes per voxel), and a whole block's copy would be a large
    temporary per worker.
    """
    sizes = np.zeros(n + 1, dtype=np.int64)
    if labels.size == 0:
        return sizes
    flat = labels.reshape(labels.shape[0], -1)
    step = max(1, _TAKE_BYTES // max(1, 8 * flat.shape[1]))
    for z in range(0, flat.shape[0], step):
        sizes += np.bincount(flat[z : z + step].ravel(), minlength=n + 1)[: n + 1]
    return sizes


#: Pass 3 maps stored labels to ids through ``np.take`` on about this many index bytes at a time.
_TAKE_BYTES = 2**18


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is not glibc."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


def _trim_heap() -> None:
    """Give the C heap's free memory back to the operating system (glibc only; else a no-op).

    Freed buffers stay resident in the allocator's per-thread arenas: called
    between passes (peak memory = the larger pass, not their sum) and every
    few blocks of pass 3. Costs microseconds, plus page faults when the
    released memory is used again.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


#: Pass 3 returns the C heap's free memory to the system after every this many blocks.
_TRIM_EVERY = 4

#: Version of the scratch files in a label job's journal (recorded with the job's
#: parameters: a journal written by another version is refused, not misread).
_SCRATCH_FORMAT = 3

#: Scratch copies of the block labels are compressed in slabs of about this many
#: bytes: Blosc takes buffers below 2 GiB, and each slab's compressed buffer is
#: allocated at the slab's full size before it shrinks (memory per worker).
_SLAB_BYTES = 2**20


def _scratch_codec() -> Any:
    """LZ4 without shuffle: on cc3d's labels 2x faster than with byte shuffle, at a similar ratio."""
    import numcodecs

    return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)


def _planes_nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of the boundary planes that start a block's scratch file."""
    return (
        2 * sum(math.prod(shape[:a] + shape[a + 1 :]) for a in range(len(shape))) * dtype.itemsize
    )


def _save_block(path: Path, labels: np.ndarray, plane_dtype: np.dtype) -> None:
    """Store what pass 1 keeps of a block: its boundary planes and its labels, in one file.

    One file per block, written to a temporary name and renamed (a block's
    scratch is complete or absent; creating a file is the costly part of
    writing a small one). Layout:

    - the boundary planes in `plane_dtype`, raw: first plane of axis 0,
      last plane of axis 0, first of axis 1, ... (read back one plane at a
      time by offset, :func:`_load_plane`);
    - the labels, compressed (:func:`_load_labels` with ``offset`` =
      :func:`_planes_nbytes`): their dtype's character code (1 byte), the
      number of planes along axis 0 per slab (8 bytes, little endian), then
      per slab its compressed length (8 bytes) and its Blosc bytes.
    """
    codec = _scratch_codec()
    labels = np.ascontiguousarray(labels)
    step = max(1, _SLAB_BYTES // max(1, labels[0].nbytes))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "wb") as f:
        for axis in range(labels.ndim):
            for index in (0, -1):
                plane = np.take(labels, index, axis=axis)
                f.write(np.ascontiguousarray(plane, dtype=plane_dtype).data)
        f.write(labels.dtype.char.encode())
        f.write(step.to_bytes(8, "little"))
        for z in range(0, labels.shape[0], step):
            data = codec.encode(labels[z : z + step])
            f.write(len(data).to_bytes(8, "little"))
            f.write(data)
    os.replace(tmp, path)


def _load_labels(
    path: Path,
    shape: tuple[int, ...],
    buffers: _ThreadBuffers | None = None,
    *,
    offset: int = 0,
) -> np.ndarray:
    """The labels stored by :func:`_save_block` for a block of `shape`.

    `offset` is where they start in the file (:func:`_planes_nbytes`). With
    `buffers`, they are decoded into this thread's reused array.
    """
    codec = _scratch_codec()
    with open(path, "rb") as f:
        f.seek(offset)
        dtype = np.dtype(f.read(1).decode())
        if buffers is None:
            out = np.empty(shape, dtype=dtype)
        else:
            out = buffers.get("labels", shape, dtype)
        step = int.from_bytes(f.read(8), "little")
        for z in range(0, shape[0], step):
            size = int.from_bytes(f.read(8), "little")
            slab = out[z : z + step].reshape(-1).view(np.uint8)
            codec.decode(f.read(size), out=slab)  # straight into the block: no copy
    return out


def _plane_dtype(blocking: Blocking) -> np.dtype:
    """The dtype of the stored boundary planes (local ids are < voxels per block)."""
    return np.dtype(np.uint32 if math.prod(blocking.block_shape) < 2**32 else np.uint64)


def _load_plane(
    path: Path, shape: tuple[int, ...], axis: int, last: bool, dtype: np.dtype
) -> np.ndarray:
    """One boundary plane of a block of `shape` stored by :func:`_save_block`."""
    sizes = [math.prod(shape[:a] + shape[a + 1 :]) for a in range(len(shape))]
    index = 2 * sum(sizes[:axis]) + (sizes[axis] if last else 0)
    plane = np.fromfile(path, dtype=dtype, count=sizes[axis], offset=index * dtype.itemsize)
    return plane.reshape(shape[:axis] + shape[axis + 1 :])


def _plane_offsets(n_inplane: int, max_diagonal: int) -> list[tuple[int, ...]]:
    return [
        d
        for d in itertools.product((-1, 0, 1), repeat=n_inplane)
        if sum(x != 0 for x in d) <= max_diagonal
    ]


class _FacesTask:
    """Pass 2: the id pairs that touch across the block's lower faces (global ids).

    Block extents are computed with plain integers (no Block / Roi objects:
    this pass is mostly Python and runs under the GIL), and each plane is
    read from its block's scratch file by offset.
    """

    def __init__(
        self, faces: Path, blocking: Blocking, journal: Journal, connectivity: int
    ) -> None:
        self.faces = faces
        self.blocking = blocking
        self.journal = journal
        ndim = blocking.ndim
        self.diagonal = _CONNECTIVITY[ndim][connectivity] > 0
        self.offsets = _plane_offsets(ndim - 1, _CONNECTIVITY[ndim][connectivity])
        self.budget = math.prod(blocking.block_shape)
        self.dtype = _plane_dtype(blocking)

    def _extent(self, pos: Sequence[int]) -> tuple[list[int], list[int]]:
        """Begin and end of the write region of the block at grid position `pos`."""
        bl = self.blocking
        begin = [r + p * b for r, p, b in zip(bl.roi.begin, pos, bl.block_shape, strict=True)]
        end = [min(x + b, e) for x, b, e in zip(begin, bl.block_shape, bl.roi.end, strict=True)]
        return begin, end

    def _plane(self, block_id: int, shape: tuple[int, ...], axis: int, last: bool) -> np.ndarray:
        """A boundary plane of a block, in local ids (plane dtype)."""
        return _load_plane(self.faces / f"{block_id}.block", shape, axis, last, self.dtype)

    def _lower_plane(
        self, pos: tuple[int, ...], begin: list[int], end: list[int], axis: int
    ) -> tuple[np.ndarray, list[int]]:
        """The plane just below the block along `axis`, in global ids, one voxel wider in-plane.

        Returns the plane and, per in-plane axis, where the block starts in
        it (0 at the region's border, else 1). With face-only connectivity
        only the neighbour straight below is read (the rim is never used).
        """
        bl = self.blocking
        inplane = [k for k in range(bl.ndim) if k != axis]
        g0 = [max(begin[k] - 1, bl.roi.begin[k]) for k in inplane]
        g1 = [min(end[k] + 1, bl.roi.end[k]) for k in inplane]
        lower = np.zeros([b - a for a, b in zip(g0, g1, strict=True)], dtype=np.uint64)
        ranges = []
        for k in range(bl.ndim):
            if k == axis:
                ranges.append([pos[k] - 1])
            elif self.diagonal:
                near = (pos[k] - 1, pos[k], pos[k] + 1)
                ranges.append([q for q in near if 0 <= q < bl.grid_shape[k]])
            else:
                ranges.append([pos[k]])
        for q in itertools.product(*ranges):
            qb, qe = self._extent(q)
            src, dst = [], []
            for i, k in enumerate(inplane):
                lo, hi = max(qb[k], g0[i]), min(qe[k], g1[i])
                if hi <= lo:
                    break
                src.append(slice(lo - qb[k], hi - qb[k]))
                dst.append(slice(lo - g0[i], hi - g0[i]))
            else:
                nid = bl.block_id(q)
                shape = tuple(e - b for b, e in zip(qb, qe, strict=True))
                part = self._plane(nid, shape, axis, last=True)[tuple(src)]
                offset = np.uint64(nid * self.budget)
                np.add(part, offset, out=lower[tuple(dst)], where=part != 0)
        shift = [begin[k] - g0[i] for i, k in enumerate(inplane)]
        return lower, shift

    def __call__(self, block_id: int) -> None:
        pos = self.blocking.position(block_id)
        begin, end = self._extent(pos)
        shape = tuple(e - b for b, e in zip(begin, end, strict=True))
        found = []
        for axis in range(len(pos)):
            if pos[axis] == 0:
                continue
            local = self._plane(block_id, shape, axis, last=False)
            if not local.any():  # no foreground on this face: nothing touches across it
                continue
            up = local.astype(np.uint64)
            np.add(up, np.uint64(block_id * self.budget), out=up, where=local != 0)
            lo, shift = self._lower_plane(pos, begin, end, axis)
            for d in self.offsets:
                su, sl = [], []
                for k, dk in enumerate(d):
                    o = dk + shift[k]
                    q0, q1 = max(0, -o), min(up.shape[k], lo.shape[k] - o)
                    if q1 <= q0:
                        break
                    su.append(slice(q0, q1))
                    sl.append(slice(q0 + o, q1 + o))
                else:
                    pairs = _touching(up[tuple(su)], lo[tuple(sl)])
                    if pairs.size:
                        found.append(pairs)
        pairs = _unique_pairs(np.concatenate(found)) if found else np.zeros((0, 2), np.uint64)
        self.journal.mark_done("faces", block_id, pairs)


def _touching(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The (a, b) id pairs of two aligned planes where both are foreground, as an (n, 2) array.

    Neighbouring voxels of one object mostly give the same pair: repeats of
    the previous pair in raster order are dropped here (a cheap pass over
    the plane), so that the sort in :func:`_unique_pairs` sees few rows.
    """
    a = a.ravel()
    b = b.ravel()
    keep = (a != 0) & (b != 0)
    a = a[keep]
    b = b[keep]
    if a.size > 1:
        new = np.empty(a.size, dtype=bool)
        new[0] = True
        np.not_equal(a[1:], a[:-1], out=new[1:])
        new[1:] |= b[1:] != b[:-1]
        a = a[new]
        b = b[new]
    return np.stack([a, b], axis=1)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of an (n, 2) id array, sorted (1D sorts only: fast)."""
    ua = np.unique(pairs[:, 0])  # few distinct ids: searchsorted beats a full argsort
    ub = np.unique(pairs[:, 1])
    ia = np.searchsorted(ua, pairs[:, 0]).astype(np.int64)
    ib = np.searchsorted(ub, pairs[:, 1]).astype(np.int64)
    keys = np.unique(ia * len(ub) + ib)
    return np.stack([ua[keys // len(ub)], ub[keys % len(ub)]], axis=1).astype(np.uint64)


class _RelabelTask:
    """Pass 3: write the final ids of a block's components (labels kept by pass 1)."""

    def __init__(
        self,
        out: Any,
        faces: Path,
        blocking: Blocking,
        journal: Journal,
        counts: np.ndarray,
        nodes: np.ndarray,
        roots: np.ndarray,
        removed: np.ndarray,
        table: np.ndarray | None = None,
    ) -> None:
        self.out = out
        self.faces = faces
        self.blocking = blocking
        self.journal = journal
        self.counts = counts
        self.prefix = np.concatenate([[0], np.cumsum(counts, dtype=np.uint64)[:-1]]).astype(
            np.uint64
        )
        self.nodes = nodes
        self.roots = roots
        self.removed = removed
        #: with a size filter, the final id (0: removed) of every component of
        #: every block, in block order (:func:`_size_table`)
        self.table = table
        self.budget = np.uint64(math.prod(blocking.block_shape))
        self.writer = ChunkIO.of(out)
        self.buffers = _ThreadBuffers()

    def final_ids(self, ids: np.ndarray) -> np.ndarray:
        """Consecutive final ids of global ids (> 0)."""
        r = ids.copy()
        if self.nodes.size:
            idx = np.searchsorted(self.nodes, ids).clip(max=self.nodes.size - 1)
            hit = self.nodes[idx] == ids
            r[hit] = self.roots[idx[hit]]
        b = (r - np.uint64(1)) // self.budget
        local = r - b * self.budget
        below = np.searchsorted(self.removed, r).astype(np.uint64)
        return self.prefix[b.astype(np.int64)] + local - below

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        shape = block.write_roi.shape
        labels = _load_labels(
            self.faces / f"{block_id}.block",
            shape,
            self.buffers,
            offset=_planes_nbytes(shape, _plane_dtype(self.blocking)),
        )
        n = int(self.counts[block_id])
        offset = np.uint64(block_id) * self.budget
        lut = np.zeros(n + 1, dtype=np.uint64)
        if n and self.table is not None:
            start = int(self.prefix[block_id])
            lut[1:] = self.table[start : start + n]
        elif n:
            lut[1:] = self.final_ids(offset + np.arange(1, n + 1, dtype=np.uint64))

        def fill(region: tuple[slice, ...], buffer: np.ndarray) -> bool | None:
            # the uint64 ids go straight into the writer's chunk buffer: the
            # block's ids are never all in memory, and no page is faulted in
            # per block ("clip": unbuffered, the ids are all in range). np.take
            # converts the indices to intp first: a few planes at a time, so
            # that this copy stays small (_TAKE_BYTES).
            src = labels[region]
            if not src.any():  # background only (final ids are >= 1): an empty chunk
                buffer[...] = 0
                return False
            step = max(1, _TAKE_BYTES // max(1, 8 * math.prod(src.shape[1:])))
            index = self.buffers.get("index", (step, *src.shape[1:]), np.intp)
            for z in range(0, src.shape[0], step):
                part = src[z : z + step]
                idx = index[: part.shape[0]]
                np.copyto(idx, part)  # into a reused buffer: np.take allocates no copy
                np.take(lut, idx, out=buffer[z : z + step], mode="clip")
            # some ids >= 1: not the fill value; unless a size filter mapped them to 0
            return True if self.table is None else None

        _write_by_chunks(self.out, block.write_roi, fill, writer=self.writer, buffers=self.buffers)
        self.journal.mark_done("relabel", block_id)
        if block_id % _TRIM_EVERY == 0:
            # the chunks' encoded copies and numpy temporaries are freed into the
            # allocator's per-thread arenas, which keep them resident: handing them
            # back every few blocks halves this pass's peak (512**3: 30 -> 16 MiB
            # above the job's imports) for a few more page faults
            _trim_heap()


def _write_by_chunks(
    out: Any,
    roi: Roi,
    fill: Callable[[tuple[slice, ...], np.ndarray], bool | None],
    *,
    writer: ChunkIO | None,
    buffers: _ThreadBuffers | None = None,
) -> None:
    """Write `roi` of `out` one write unit (chunk, or shard) at a time from a reused buffer.

    ``fill(region, buffer)`` puts the values of `region` (slices relative to
    `roi`) into `buffer` (the unit's shape) and may say what it knows:
    False when they are all 0 (the fill value), True when none of the units
    it fills is all 0 (the writer then skips its own test), None when it
    does not know. Only one unit of output values
    is in memory at a time, and the same buffer serves every unit (no new
    pages per block; with `buffers`, per thread). `writer` (``ChunkIO.of(out)``) writes local zarr v3
    chunks directly; without one, ``out[...] = buffer``.
    """
    unit = tuple(int(c) for c in (getattr(out, "shards", None) or out.chunks))
    if buffers is None:
        buffer = np.empty(unit, dtype=out.dtype)
    else:
        buffer = buffers.get("chunk", unit, out.dtype)
    # the output's own grid: a region that does not start on a chunk boundary (a
    # roi, serial runs only) is written in pieces, each inside one chunk
    ranges = [range(b - b % u, e, u) for b, e, u in zip(roi.begin, roi.end, unit, strict=True)]
    for start in itertools.product(*ranges):
        part = Roi(tuple(start), unit).intersect(roi)
        view = buffer[tuple(slice(0, s) for s in part.shape)]
        known = fill(part.relative_to(roi), view)
        slices = part.to_slices()
        if writer is not None and writer.aligned(slices):
            # what fill knows is about 0: a hint only where 0 is the fill value
            zero_fill = bool(np.all(writer.fill_value == 0))
            empty = None if known is None or not zero_fill else not known
            writer.write(slices, view, empty=empty)
        else:
            out[slices] = view


def _size_table(
    counts: np.ndarray,
    sizes: np.ndarray,
    nodes: np.ndarray,
    roots: np.ndarray,
    budget: int,
    min_size: int,
) -> tuple[np.ndarray, int]:
    """Final ids of all components of all blocks with a size filter: ``(table, n_kept)``.

    `sizes` holds the voxel counts of the local ids ``1..counts[b]`` of each
    block ``b``, in block order (the table's order too). The pieces of each
    merged object (`nodes` -> `roots`, global ids) add up at its root; roots
    with at least `min_size` voxels get consecutive ids ``1..n_kept`` in the
    order of their global ids (as without a filter), the others and all
    non-roots map through their root (0 when it is removed).
    """
    k = int(counts.sum())
    prefix = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)[:-1]]).astype(np.int64)

    def dense(ids: np.ndarray) -> np.ndarray:
        b = ((ids - np.uint64(1)) // np.uint64(budget)).astype(np.int64)
        return prefix[b] + (ids - b.astype(np.uint64) * np.uint64(budget)).astype(np.int64) - 1

    root = np.arange(k, dtype=np.int64)
    if nodes.size:
        root[dense(nodes)] = dense(roots)
    total = np.bincount(root, weights=sizes, minlength=k) if k else np.zeros(0)
    keep = total >= min_size  # non-roots total 0 (< min_size >= 1)
    keep &= root == np.arange(k)
    del total
    new = np.cumsum(keep, dtype=np.uint64)
    new[~keep] = 0
    return new[root], int(np.count_nonzero(keep))


def merge_pairs(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union-find over id pairs: ``(nodes, roots, removed)``.

    ``nodes`` are the sorted ids that appear in a pair, ``roots`` the smallest
    id of each node's connected component, ``removed`` the sorted ids that
    are merged into a smaller one.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if pairs.size == 0:
        empty = np.zeros(0, np.uint64)
        return empty, empty, empty
    nodes = np.unique(pairs)
    idx = np.searchsorted(nodes, pairs)
    k = nodes.size
    graph = coo_matrix((np.ones(len(idx), np.int8), (idx[:, 0], idx[:, 1])), shape=(k, k))
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)  # nodes are sorted: first = smallest
    roots = nodes[first][comp]
    removed = nodes[roots != nodes]
    return nodes, roots, removed


def label(
    image: Any,
    *,
    out: Any = None,
    threshold: float | None = None,
    connectivity: int | None = None,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    roi: Sequence[slice] | Roi | None = None,
    spacing: Any = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    min_size: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Connected components of a volume of any size, exactly as in memory.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        Binary mask, label image or intensities; foreground is ``image != 0``
        or, with `threshold`, ``image > threshold``.
    out : str, path, zarr.Array or None
        Output (uint64); see :func:`map_blocks`.
    threshold : float, optional
        Foreground is ``image > threshold``.
    connectivity : {6, 18, 26} in 3D, {4, 8} in 2D, optional
        Which neighbours connect (default: full, 26 or 8; as cc3d and
        ``skimage.measure.label``).
    roi : tuple of slice or Roi, optional
        Label only this box: the result inside it equals labelling
        ``image[roi]`` in memory (objects are cut at the box's faces); the
        output outside it stays 0. With several workers it must start on a
        chunk boundary.
    min_size : int, default 0
        Remove objects with fewer voxels than this (they become background)
        and number the kept ones ``1..N``; in voxels (convert a physical size
        with the spacing, e.g. ``math.ceil(size_nm3 / math.prod(spacing))``).
        Exact: an object is measured whole after stitching, however it is
        cut by blocks. Costs no extra pass (pass 1 counts each block's
        components, the merge adds them up); 0 or 1 keeps everything.
    block_shape, chunks, spacing, n_workers, scheduler, resume, overwrite, progress
        As for :func:`map_blocks`. Blocks must be chunk-aligned when parallel.

    Returns
    -------
    zarr.Array of uint64
        Labels ``1..N`` (0 = background). Exact: equal to
        ``cc3d.connected_components(foreground, connectivity=...)`` (then
        without the objects smaller than `min_size`) up to a
        renumbering of the ids (VOI = 0), for any block shape. Ids follow
        block order, then cc3d's raster order inside the block of each
        object's first voxel, so they depend on `block_shape`. The number of
        objects is stored in the attribute ``emseg.n_labels``.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((6, 6), np.uint8); img[:, 2] = 1; img[2, :] = 1
    >>> out = label(img, block_shape=(2, 2), chunks=(2, 2), progress=False)
    >>> int(out[:].max()), out.attrs["emseg"]["n_labels"]
    (1, 1)
    """
    arrays, names = _normalize_inputs(image)
    img = arrays[0]
    shape = check_inputs(arrays, names)
    ndim = len(shape)
    conn = parse_connectivity(connectivity, ndim)
    if threshold is None:
        if np.dtype(img.dtype).kind not in "biuf":
            check_label_dtype(img, name="image")
    elif not np.isfinite(float(threshold)):
        raise EmsegValueError(f"`threshold` must be a finite number; got {threshold!r}.")
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 0:
        raise EmsegValueError(
            f"`min_size` must be an integer >= 0 (voxels); got {min_size!r}. "
            "Convert a physical size with the spacing: ceil(size_nm3 / prod(spacing))."
        )
    min_size = int(min_size)
    out_chunks = resolve_chunks(out, chunks, shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, out_chunks)
    blocking = Blocking(shape, block_shape, roi=roi)
    job: dict[str, Any] = {
        "job": "label",
        "format": _SCRATCH_FORMAT,
        "roi": [list(blocking.roi.begin), list(blocking.roi.end)],
        "shape": list(shape),
        "input_dtype": str(np.dtype(img.dtype)),
        "threshold": None if threshold is None else float(threshold),
        "connectivity": conn,
        "block_shape": list(blocking.block_shape),
        "chunks": list(out_chunks),
    }
    if min_size > 1:
        # only then: jobs without a filter keep their recorded params (resume works)
        job["min_size"] = min_size
    with open_backend(scheduler, n_workers) as backend:
        check_chunk_alignment(blocking, out_chunks, parallel=backend.parallel)
        if backend.kind == "distributed" and out is None:
            raise EmsegValueError(
                "`out` must be a path or a zarr array on disk when running on a distributed "
                f"scheduler ({describe_scheduler(scheduler)}): workers write it directly."
            )
        output = prepare_output(
            out,
            shape=shape,
            dtype=np.uint64,
            chunks=out_chunks,
            spacing=input_spacing(img, spacing, ndim),
            labels=True,
            params=job,
            resume=resume,
            overwrite=overwrite,
        )
        if output.journal.complete:
            return output.array
        journal = output.journal
        faces = journal.scratch("faces")
        faces.mkdir(exist_ok=True)
        n_blocks = len(blocking)

        components = _ComponentsTask(
            img, faces, blocking, journal, threshold, conn, sizes=min_size > 1
        )
        if backend.kind != "distributed":
            # the job's own cc3d thread, ended with the pass: its allocator arena (with
            # the freed cc3d output in it) is then reused by the next passes' threads
            components.cc3d = cf.ThreadPoolExecutor(1, thread_name_prefix="emseg-cc3d")
        try:
            run_blocks(
                components,
                output.todo("components", n_blocks),
                backend,
                progress=progress,
                desc="label 1/3 components",
            )
        finally:
            if components.cc3d is not None:
                components.cc3d.shutdown()
        del components
        _trim_heap()
        run_blocks(
            _FacesTask(faces, blocking, journal, conn),
            output.todo("faces", n_blocks),
            backend,
            progress=progress,
            desc="label 2/3 faces",
        )
        counts = np.zeros(n_blocks, dtype=np.uint64)
        block_sizes: list[tuple[int, np.ndarray]] = []
        for bid, s in journal.iter_summaries("components"):
            if s is None:
                continue
            if min_size > 1:  # [n, sizes of local ids 1..n]
                counts[bid] = int(s[0])
                block_sizes.append((bid, s[1:]))
            else:
                counts[bid] = int(s)
        found = [s for _, s in journal.iter_summaries("faces") if s is not None and s.size]
        pairs = np.concatenate(found) if found else np.zeros((0, 2), np.uint64)
        nodes, roots, removed = merge_pairs(pairs.astype(np.uint64))
        table = None
        if min_size > 1:
            block_sizes.sort(key=lambda item: item[0])
            sizes = (
                np.concatenate([sz for _, sz in block_sizes])
                if block_sizes
                else np.zeros(0, np.int64)
            )
            table, n_labels = _size_table(
                counts, sizes, nodes, roots, math.prod(blocking.block_shape), min_size
            )
            del sizes, block_sizes
            log.info(
                "label: %d objects of >= %d voxels (%d merged across blocks)",
                n_labels,
                min_size,
                removed.size,
            )
        else:
            n_labels = int(counts.sum()) - int(removed.size)
            log.info("label: %d objects (%d merged across blocks)", n_labels, removed.size)
        del found, pairs
        _trim_heap()
        run_blocks(
            _RelabelTask(
                output.array, faces, blocking, journal, counts, nodes, roots, removed, table
            ),
            output.todo("relabel", n_blocks),
            backend,
            progress=progress,
            desc="label 3/3 relabel",
        )
    finish_output(output, job)
    attrs = dict(output.array.attrs["emseg"])
    attrs["n_labels"] = n_labels
    output.array.attrs["emseg"] = attrs
    return output.array


class _Remap:
    """Block function of :func:`relabel`: ids in `keys` become `values`, others stay."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(keys)
        self.keys = keys[order]
        self.values = values[order]

    def __call__(self, data: np.ndarray) -> np.ndarray:
        out = data.astype(self.values.dtype, copy=True)
        if self.keys.size == 0:
            return out
        idx = np.searchsorted(self.keys, data).clip(max=self.keys.size - 1)
        hit = self.keys[idx] == data
        out[hit] = self.values[idx[hit]]
        return out


def relabel(
    labels: Any,
    mapping: dict[int, int] | tuple[Sequence[int], Sequence[int]],
    *,
    out: Any = None,
    dtype: Any = np.uint64,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    roi: Sequence[slice] | Roi | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Replace label ids blockwise through a mapping; ids not in it are kept.

    Parameters
    ----------
    labels : (Z, Y, X) or (Y, X) integer array, zarr array, LazyImage or path
        The label image.
    mapping : dict or (keys, values)
        Old id -> new id. Exact: the result equals applying the mapping in
        memory.
    dtype : dtype, default uint64
        Output dtype.
    out, block_shape, chunks, roi, n_workers, scheduler, resume, overwrite, progress
        As for :func:`map_blocks` (with `roi`, only that box is written).

    Returns
    -------
    zarr.Array of `dtype`
    """
    import hashlib

    arrays, _ = _normalize_inputs(labels)
    check_label_dtype(arrays[0], name="labels")
    if isinstance(mapping, dict):
        keys = np.fromiter(mapping.keys(), dtype=np.uint64, count=len(mapping))
        values = np.fromiter(mapping.values(), dtype=np.uint64, count=len(mapping))
    else:
        keys = np.asarray(mapping[0], dtype=np.uint64)
        values = np.asarray(mapping[1], dtype=np.uint64)
        if keys.shape != values.shape or keys.ndim != 1:
            raise EmsegValueError(
                "`mapping` must be a dict or two 1D sequences (keys, values) of equal length; "
                f"got shapes {keys.shape} and {values.shape}."
            )
    if np.unique(keys).size != keys.size:
        raise EmsegValueError("`mapping` keys must be unique; got repeated old ids.")
    digest = hashlib.sha1(keys.tobytes() + values.tobytes()).hexdigest()
    func = _Remap(keys, values.astype(np.dtype(dtype)))
    return map_blocks(
        func,
        arrays[0],
        out=out,
        dtype=dtype,
        block_shape=block_shape,
        chunks=chunks,
        roi=roi,
        labels=True,
        n_workers=n_workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        params={"job": "relabel", "mapping_sha1": digest},
    )
