"""``map_blocks``: a block function over one or more aligned volumes into a zarr output."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

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
from emseg.blockwise._output import (
    as_input,
    check_inputs,
    finish_output,
    input_spacing,
    prepare_output,
    resolve_chunks,
)
from emseg.errors import EmsegTypeError, EmsegValueError

log = logging.getLogger(__name__)


def read_block(array: Any, roi: Roi, *, reader: ChunkIO | None = None) -> np.ndarray:
    """The voxels of `roi` from any sliceable array, as a numpy array.

    A local zarr v3 array (or a LazyImage over one) is read chunk by chunk
    without zarr's per-chunk Python path (:class:`ChunkIO`); pass `reader`
    (``ChunkIO.of(array)``) to skip the check when reading many blocks.
    """
    if reader is None:
        reader = ChunkIO.of(array)
    if reader is not None:
        return reader.read(roi.to_slices())
    return np.asarray(array[roi.to_slices()])


def write_block(out: Any, roi: Roi, data: np.ndarray, *, writer: ChunkIO | None = None) -> None:
    """Write `data` (the shape of `roi`, or ``(C, *roi.shape)``) into `out`.

    With a leading channel axis, `out` is ``(C, *spatial)`` and all channels
    are written. A chunk-aligned region of a local zarr v3 array is encoded and written
    chunk by chunk without zarr's per-chunk Python path (byte-identical
    chunks); anything else goes through ``out[...] = data``.
    """
    data = np.asarray(data)
    slices = roi.to_slices()
    if data.ndim == len(slices) + 1:  # a leading channel axis, written whole
        slices = (slice(0, int(out.shape[0])), *slices)
    if data.dtype != out.dtype:
        data = data.astype(out.dtype)
    if writer is None:
        writer = ChunkIO.of(out)
    if writer is not None and not writer.read_only and writer.aligned(slices):
        writer.write(slices, data)
    else:
        out[slices] = data


def crop_result(result: Any, block: Block, *, channels: bool = False) -> np.ndarray:
    """Crop a block function's result to the write region.

    The result may cover the read region (it is cropped) or already the
    write region; with `channels`, it has one more leading axis (channels),
    which is kept whole.
    """
    result = np.asarray(result)
    lead: tuple[slice, ...] = ()
    spatial = result.shape
    if channels:
        if result.ndim != len(block.read_roi.shape) + 1:
            raise EmsegValueError(
                f"the block function returned shape {result.shape} for block {block.block_id}; "
                "with `channels` it must return (C, *block) with C channels first, e.g. "
                f"(C, *{block.read_roi.shape}) or (C, *{block.write_roi.shape})."
            )
        lead, spatial = (slice(None),), result.shape[1:]
    if spatial == block.read_roi.shape:
        return result[lead + block.write_in_read]
    if spatial == block.write_roi.shape:
        return result
    raise EmsegValueError(
        f"the block function returned shape {result.shape} for block {block.block_id}; it must "
        f"return the shape of its input (the read region, {block.read_roi.shape}) or of the "
        f"write region ({block.write_roi.shape})"
        + (", after a leading channel axis." if channels else ".")
    )


class MapTask:
    """Process one block: read, apply, crop, write, record. Picklable; sent once per worker."""

    def __init__(
        self,
        func: Callable[..., Any],
        inputs: Sequence[Any],
        out: Any,
        blocking: Blocking,
        journal: Journal,
        stage: str,
        kwargs: dict[str, Any],
        pass_block: bool = False,
        *,
        channels: bool = False,
        mask: Any = None,
    ) -> None:
        self.func = func
        self.inputs = list(inputs)
        self.out = out
        self.blocking = blocking
        self.journal = journal
        self.stage = stage
        self.kwargs = kwargs
        self.pass_block = pass_block
        self.channels = channels
        self.mask = mask
        # direct chunk I/O where possible (resolved once, travels with the task)
        self.readers = [ChunkIO.of(a) for a in self.inputs]
        self.mask_reader = ChunkIO.of(mask) if mask is not None else None
        self.writer = ChunkIO.of(out)

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        inside = None
        if self.mask is not None:
            inside = read_block(self.mask, block.write_roi, reader=self.mask_reader) != 0
            if not inside.any():  # nothing to compute: zeros (stored as no chunk at all)
                lead = tuple(self.out.shape[:1]) if self.channels else ()
                zeros = np.zeros(lead + block.write_roi.shape, self.out.dtype)
                write_block(self.out, block.write_roi, zeros, writer=self.writer)
                self.journal.mark_done(self.stage, block_id)
                return
        readers = self.readers
        data = [
            read_block(a, block.read_roi, reader=r)
            for a, r in zip(self.inputs, readers, strict=True)
        ]
        if self.pass_block:
            result = self.func(*data, block=block, **self.kwargs)
        else:
            result = self.func(*data, **self.kwargs)
        del data
        result = crop_result(result, block, channels=self.channels)
        if inside is not None and not inside.all():
            result = np.array(result, dtype=self.out.dtype)  # a writable copy
            result[..., ~inside] = 0
        write_block(self.out, block.write_roi, result, writer=self.writer)
        self.journal.mark_done(self.stage, block_id)


def as_inputs(inputs: Any) -> tuple[list[Any], list[str]]:
    """Normalise one array or a sequence of arrays (or paths) to a list of readable inputs.

    Parameters
    ----------
    inputs : array, path, or sequence of them
        numpy arrays, zarr arrays, :class:`emseg.io.LazyImage` or paths
        (opened with :func:`emseg.io.open_image`).

    Returns
    -------
    arrays : list
        The inputs, each readable by slicing.
    names : list of str
        How each is named in error messages (``"inputs"`` or ``"inputs[i]"``).

    Raises
    ------
    EmsegTypeError
        When an input is not an array or a path.
    EmsegValueError
        When `inputs` is an empty sequence.
    """
    if isinstance(inputs, list | tuple):
        arrays = [as_input(a, name=f"inputs[{i}]") for i, a in enumerate(inputs)]
        names = [f"inputs[{i}]" for i in range(len(arrays))]
    else:
        arrays, names = [as_input(inputs, name="inputs")], ["inputs"]
    if not arrays:
        raise EmsegValueError("`inputs` must hold at least one array; got an empty sequence.")
    return arrays, names


_normalize_inputs = as_inputs  # the former private name (still imported by the label engine)


def func_identity(func: Callable[..., Any]) -> str:
    """A name for `func` that is the same in every process (recorded in the journal).

    Functions are named by module and qualified name; other callables (objects
    with ``__call__``, ``functools.partial``) by their type and a
    deterministic token of their state, so that resuming with a different
    mapping or different bound arguments is refused, and resuming with the
    same one is allowed in a new process (``repr`` would hold a memory address).
    """
    qualname = getattr(func, "__qualname__", None)
    if qualname is not None:
        return f"{getattr(func, '__module__', '')}.{qualname}"
    from dask.base import tokenize

    kind = type(func)
    return f"{kind.__module__}.{kind.__qualname__}:{tokenize(func, ensure_deterministic=True)}"


def map_blocks(
    func: Callable[..., Any],
    inputs: Any,
    *,
    out: Any = None,
    halo: int | Sequence[int] = 0,
    dtype: Any = None,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    roi: Sequence[slice] | Roi | None = None,
    spacing: Any = None,
    labels: bool = False,
    pass_block: bool = False,
    channels: int | None = None,
    mask: Any = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    params: dict[str, Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Apply ``func`` block by block and write the results into a zarr array.

    For each block, ``func(*arrays, **kwargs)`` receives the read region
    (the write region grown by `halo`, clipped to the volume) of every input
    and returns an array of that shape (or of the write region's shape); the
    part over the write region is written to `out`. The result equals
    ``func`` applied to the whole volume wherever ``func`` only needs `halo`
    voxels of context and treats the volume's border the way it treats the
    read region's border (e.g. scipy filters with ``mode="reflect"``).

    Parameters
    ----------
    func : callable
        ``func(*arrays, **kwargs) -> ndarray``. Must be picklable (a module
        level function) when running on a distributed scheduler.
    inputs : array or sequence of arrays, (Z, Y, X) or (Y, X)
        numpy arrays, zarr arrays, :class:`emseg.io.LazyImage` or paths, all of
        one shape.
    out : str, path, zarr.Array or None
        Where to write: a path (a zarr array is created), an existing zarr
        array of the right shape and dtype, or None for an in-memory zarr
        array (threads only).
    halo : int or tuple of int, default 0
        Context in voxels on each side of a block. May exceed the block shape.
    dtype : dtype, optional
        Output dtype (results are cast with ``astype``); the first input's by
        default.
    block_shape : int or tuple of int, optional
        The write region of a block. Default: the output's chunks, enlarged
        to about 128**3 voxels (see :func:`default_block_shape`).
    chunks : tuple of int, optional
        Chunks of a created output; 64**3 (3D) or 256**2 (2D) by default.
    roi : tuple of slice or Roi, optional
        Only write this box of the output (the rest stays 0).
    spacing : sequence of float, optional
        Voxel size (nm) stored with a created output; the input's by default.
    labels : bool, default False
        Mark a created output as a label image.
    pass_block : bool, default False
        Also pass the :class:`Block` as ``func(*arrays, block=block, **kwargs)``,
        e.g. to compute only the write region (``block.write_in_read``).
    channels : int, optional
        Channel-first output: ``func`` returns ``(channels, *block)`` (of the
        read or the write region) and the output has shape
        ``(channels, *shape)``, axes ``czyx`` / ``cyx``, chunks
        ``(channels, *chunks)``; the channel axis is never blocked (every
        block writes all channels). For feature stacks and class
        probabilities.
    mask : array, zarr array, LazyImage or path, optional
        Same shape as the inputs; nonzero = process. Blocks whose write
        region holds no mask voxel are not computed (their output is 0, the
        fill value: nothing is stored for them); in the other blocks the
        output is 0 outside the mask. The result equals ``np.where(mask,
        func(whole volume), 0)`` (with `channels`, for every channel).
    n_workers : int, default 2
        Threads (default scheduler) or processes (``scheduler="local"``).
    scheduler : None, "threads", "serial", "local", address or Client
        Where blocks run; see :mod:`emseg.blockwise._execute`.
    resume : bool, default False
        Continue an interrupted job on the same `out`: finished blocks are
        skipped; refused when the parameters differ.
    overwrite : bool, default False
        Replace an existing `out`. Without `resume` or `overwrite`, an
        existing output is an :class:`~emseg.errors.OutputExistsError`.
    progress : bool, default True
        Show a progress bar on stderr.
    params : dict, optional
        Extra job parameters recorded in the journal and compared on resume
        (e.g. the filter's sigma); ``func``'s qualified name and `kwargs` are
        always recorded.
    kwargs : dict, optional
        Keyword arguments passed to ``func``.

    Returns
    -------
    zarr.Array of `dtype`, shape of the inputs (or ``(channels, *shape)``)
        The output, with attribute ``emseg = {"complete": true, ...}``.

    Raises
    ------
    ChunkAlignmentError
        When blocks are not aligned to the output's chunks and blocks run in
        parallel.
    OutputExistsError, EmsegValueError, SchedulerError
        See :func:`prepare_output` and :func:`open_backend`.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> image = np.random.default_rng(0).random((40, 50), dtype=np.float32)
    >>> out = map_blocks(ndimage.uniform_filter, image, halo=1, block_shape=16,
    ...                  chunks=(16, 16), kwargs={"size": 3}, progress=False)
    >>> bool(np.allclose(out[:], ndimage.uniform_filter(image, size=3)))
    True
    """
    if not callable(func):
        raise EmsegTypeError(f"`func` must be callable; got {type(func).__name__}.")
    arrays, names = as_inputs(inputs)
    shape = check_inputs(arrays, names)
    ndim = len(shape)
    out_dtype = np.dtype(dtype) if dtype is not None else np.dtype(arrays[0].dtype)
    n_channels = _parse_channels(channels)
    mask_array = _parse_mask(mask, shape)
    kwargs = dict(kwargs or {})
    job = {
        "job": "map_blocks",
        "func": func_identity(func),
        "kwargs": kwargs,
        "shape": list(shape),
        "dtype": str(out_dtype),
        "halo": halo,
        "roi": repr(roi),
        **({"channels": n_channels} if n_channels is not None else {}),
        **({"mask": _describe(mask)} if mask is not None else {}),
        **(params or {}),
    }
    out_shape = shape if n_channels is None else (n_channels, *shape)
    if n_channels is not None and hasattr(out, "chunks") and len(out.chunks) == ndim + 1:
        unit = getattr(out, "shards", None) or out.chunks
        out_chunks = tuple(int(c) for c in unit[1:])
    else:
        out_chunks = resolve_chunks(out, chunks, shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, out_chunks)
    blocking = Blocking(shape, block_shape, halo=halo, roi=roi)
    job["block_shape"] = list(blocking.block_shape)
    job["chunks"] = list(out_chunks)
    with open_backend(scheduler, n_workers) as backend:
        check_chunk_alignment(blocking, out_chunks, parallel=backend.parallel)
        if backend.kind == "distributed" and out is None:
            raise EmsegValueError(
                "`out` must be a path or a zarr array on disk when running on a distributed "
                f"scheduler ({describe_scheduler(scheduler)}): workers write it directly."
            )
        output = prepare_output(
            out,
            shape=out_shape,
            dtype=out_dtype,
            chunks=out_chunks if n_channels is None else (n_channels, *out_chunks),
            spacing=input_spacing(arrays[0], spacing, ndim),
            labels=labels,
            params=job,
            resume=resume,
            overwrite=overwrite,
            axes=None if n_channels is None else "c" + "zyx"[3 - ndim :],
        )
        if output.journal.complete:
            log.info("%s is complete already; nothing to resume", output.array)
            return output.array
        stage = "map"
        todo = output.todo(stage, len(blocking))
        if len(todo) < len(blocking):
            log.info(
                "resuming: %d of %d blocks done already", len(blocking) - len(todo), len(blocking)
            )
        task = MapTask(
            func,
            arrays,
            output.array,
            blocking,
            output.journal,
            stage,
            kwargs,
            pass_block,
            channels=n_channels is not None,
            mask=mask_array,
        )
        run_blocks(task, todo, backend, progress=progress, desc=job["func"].rsplit(".", 1)[-1])
    finish_output(output, job)
    return output.array


def _parse_channels(channels: Any) -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer):
        raise EmsegTypeError(
            f"`channels` must be None or a positive integer (the number of channels the block "
            f"function returns first); got {channels!r}."
        )
    if channels < 1:
        raise EmsegValueError(f"`channels` must be >= 1; got {channels}.")
    return int(channels)


def _parse_mask(mask: Any, shape: tuple[int, ...]) -> Any:
    if mask is None:
        return None
    array = as_input(mask, name="mask")
    if tuple(int(s) for s in array.shape) != shape:
        raise EmsegValueError(
            f"`mask` must have the inputs' shape {shape} (nonzero = process); got "
            f"{tuple(array.shape)}. Resample or crop the mask to the image first."
        )
    return array


def _describe(array: Any) -> str:
    """How an input is recorded in a journal: its path when it has one, else its type."""
    if isinstance(array, str | os.PathLike):
        return str(array)
    store = getattr(array, "store", None)
    root = getattr(store, "root", None)
    if root is not None:
        return f"{root}/{getattr(array, 'path', '')}"
    return str(getattr(array, "source", "") or type(array).__name__)
