"""Feature stacks of volumes of any size, block by block, into a (C, Z, Y, X) OME-Zarr.

A block's features are computed on its read region (the write region grown
by :func:`~emseg.features.feature_halo`, clipped to the volume) and cropped to
the write region, so the stack equals :func:`compute_features` of the whole
volume (scipy's ``mode="reflect"`` treats the volume's border the same way in
both). Only one block's stack per worker is ever in memory.

:func:`run_channel_blocks` is the engine shared with the forest's prediction:
a block function that returns channel-first arrays (or several) written
into channel-first zarr outputs, with the journal, resume and schedulers of
:mod:`emseg.blockwise`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emseg.blockwise import (
    Blocking,
    Journal,
    Output,
    SchedulerLike,
    as_input,
    check_chunk_alignment,
    check_inputs,
    default_block_shape,
    finish_output,
    input_spacing,
    open_backend,
    prepare_output,
    run_blocks,
)
from emseg.errors import EmsegValueError
from emseg.features._filters import (
    FeatureSpec,
    compute_features,
    feature_halo,
    feature_names,
    feature_spec,
    n_features,
)


def _spatial_chunks(chunks: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    from emseg.blockwise import parse_block_shape

    if chunks is None:
        side = 64 if len(shape) == 3 else 256
        return tuple(max(1, min(side, s)) for s in shape)
    return tuple(
        min(c, max(1, s)) for c, s in zip(parse_block_shape(chunks, len(shape)), shape, strict=True)
    )


def prepare_channel_output(
    out: Any,
    *,
    shape: tuple[int, ...],
    dtype: Any,
    chunks: tuple[int, ...],
    spacing: tuple[float, ...],
    params: dict[str, Any],
    resume: bool,
    overwrite: bool,
    labels: bool = False,
    channel_names: Sequence[str] | None = None,
) -> Output:
    """Create (or reopen with `resume`) an OME-Zarr output of `shape` and start its journal.

    `shape` is ``(C, *spatial)`` (axes ``czyx`` / ``cyx``) or spatial only
    (a label image). `chunks` are the full chunk shape.
    """
    import zarr

    if out is None or not isinstance(out, str | os.PathLike):
        return prepare_output(
            out,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            spacing=spacing,
            labels=labels,
            params=params,
            resume=resume,
            overwrite=overwrite,
        )
    path = Path(out)
    if resume and overwrite:
        raise EmsegValueError(
            "`resume` and `overwrite` exclude each other: resume continues the existing output, "
            "overwrite deletes it. Pass one of them."
        )
    if path.exists() and resume:
        node = zarr.open(str(path), mode="r+")
        arr = node["0"] if isinstance(node, zarr.Group) else node
        return prepare_output(
            arr,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            spacing=spacing,
            labels=labels,
            params=params,
            resume=True,
            overwrite=False,
        )
    from emseg.io import create_image

    spatial = len(spacing)
    axes = ("c" if len(shape) > spatial else "") + "zyx"[3 - spatial :]
    attrs: dict[str, Any] = {"producer": str(params.get("job", "emseg"))}
    arr = create_image(
        path,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        spacing=spacing,
        axes=axes,
        labels=labels,
        overwrite=overwrite,
        attrs=attrs,
        channel_names=list(channel_names) if channel_names is not None else None,
    )
    return prepare_output(
        arr,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        spacing=spacing,
        labels=labels,
        params=params,
        resume=False,
        overwrite=True,
    )


class ChannelTask:
    """Read a block's read region, apply ``func``, crop each result and write it. Picklable."""

    def __init__(
        self,
        func: Callable[..., Sequence[np.ndarray]],
        image: Any,
        outs: Sequence[Any],
        blocking: Blocking,
        journal: Journal,
        stage: str,
        kwargs: dict[str, Any],
    ) -> None:
        self.func = func
        self.image = image
        self.outs = list(outs)
        self.blocking = blocking
        self.journal = journal
        self.stage = stage
        self.kwargs = kwargs

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        data = np.asarray(self.image[block.read_roi.to_slices()])
        results = self.func(data, **self.kwargs)
        inner = block.write_in_read
        write = block.write_roi.to_slices()
        for out, res in zip(self.outs, results, strict=True):
            lead = (slice(None),) * (res.ndim - len(inner))
            out[lead + write] = np.asarray(res[lead + inner]).astype(out.dtype, copy=False)
        self.journal.mark_done(self.stage, block_id)


def prepare_class_map_output(
    out: Any,
    *,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    spacing: tuple[float, ...],
    params: dict[str, Any],
    job: str,
    resume: bool,
    overwrite: bool,
) -> Output:
    """The uint8 class-map output written beside a prediction's probabilities.

    `shape` and `chunks` are spatial; `job` names the producer in the journal
    parameters (so a class map never resumes another job's journal).
    """
    return prepare_channel_output(
        out,
        shape=shape,
        dtype=np.uint8,
        chunks=chunks,
        spacing=spacing,
        params={**params, "job": job},
        resume=resume,
        overwrite=overwrite,
        labels=True,
    )


def run_channel_blocks(
    func: Callable[..., Sequence[np.ndarray]],
    image: Any,
    outputs: Sequence[Output],
    *,
    halo: Sequence[int],
    block_shape: Any,
    chunks: tuple[int, ...],
    n_workers: int,
    scheduler: SchedulerLike,
    progress: bool,
    params: dict[str, Any],
    kwargs: dict[str, Any],
    desc: str,
) -> None:
    """Run ``func(block_data, **kwargs) -> [result per output]`` over every block.

    The first output's journal records finished blocks (resume skips them);
    all outputs are marked complete at the end.
    """
    shape = tuple(int(s) for s in image.shape)
    if block_shape is None:
        block_shape = default_block_shape(shape, chunks)
    blocking = Blocking(shape, block_shape, halo=tuple(halo))
    journal = outputs[0].journal
    with open_backend(scheduler, n_workers) as backend:
        check_chunk_alignment(blocking, chunks, parallel=backend.parallel)
        if backend.kind == "distributed" and any(
            getattr(getattr(o.array, "store", None), "root", None) is None for o in outputs
        ):
            raise EmsegValueError(
                "`out` must be a path on disk when running on a distributed scheduler: "
                "workers write it directly."
            )
        if journal.complete:
            return
        todo = outputs[0].todo("map", len(blocking))
        task = ChannelTask(
            func, image, [o.array for o in outputs], blocking, journal, "map", kwargs
        )
        run_blocks(task, todo, backend, progress=progress, desc=desc)
    for o in outputs[1:]:
        finish_output(o, params)
    finish_output(outputs[0], params)


def _features_block(
    data: np.ndarray, *, spec: dict[str, Any], spacing: list[float]
) -> list[np.ndarray]:
    return [compute_features(data, spacing=spacing, spec=FeatureSpec.from_dict(spec))]


def compute_features_blockwise(
    image: Any,
    *,
    out: Any = None,
    spacing: Any = None,
    spec: FeatureSpec | None = None,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """The feature stack of a volume of any size, blockwise, into a channel-first zarr.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        Grey levels; read block by block.
    out : str, path or None
        A ``.zarr`` / ``.ome.zarr`` path (an OME-Zarr with axes ``czyx``
        and the channel names in its attributes), or None (in memory).
    spacing : sequence of float, optional
        Voxel size in nm; the image's own (LazyImage) or 1.0 by default.
    spec : FeatureSpec, optional
        Default :func:`feature_spec` for the spacing.
    block_shape, chunks, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks` (`chunks` are spatial; the
        channel axis is one chunk).

    Returns
    -------
    zarr.Array of float32, shape (F, Z, Y, X) or (F, Y, X)
        Equal to :func:`compute_features` of the whole volume (same float32
        operations on the same values) for any block shape.
    """
    img = as_input(image)
    shape = check_inputs([img], ["image"])
    sp = input_spacing(img, spacing, len(shape))
    if spec is None:
        spec = feature_spec(spacing=sp)
    nf = n_features(spec, len(shape))
    spatial_chunks = _spatial_chunks(chunks, shape)
    params = {
        "job": "emseg.features",
        "spec": spec.to_dict(),
        "spacing": list(sp),
        "shape": list(shape),
    }
    output = prepare_channel_output(
        out,
        shape=(nf, *shape),
        dtype=np.float32,
        chunks=(nf, *spatial_chunks),
        spacing=sp,
        params=params,
        resume=resume,
        overwrite=overwrite,
        channel_names=feature_names(spec, len(shape)),
    )
    run_channel_blocks(
        _features_block,
        img,
        [output],
        halo=feature_halo(spec, sp),
        block_shape=block_shape,
        chunks=spatial_chunks,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=progress,
        params=params,
        kwargs={"spec": spec.to_dict(), "spacing": list(sp)},
        desc="features",
    )
    return output.array
