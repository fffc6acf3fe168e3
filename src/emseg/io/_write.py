"""Writers: OME-Zarr with a multiscale pyramid and provenance, and (OME-)TIFF.

Every writer streams: the input (a numpy array, a :class:`LazyImage` or a
Dask array) is read block by block, each block made of whole output chunks,
in parallel over a few threads, so peak memory is a few block buffers and
never the volume. Outputs are atomic (see :mod:`emseg.io._atomic`): nothing
appears at the output path until the output is complete.

Layout of an OME-Zarr written here (NGFF 0.5 on Zarr v3 by default, NGFF 0.4
on Zarr v2 with ``zarr_format=2``)::

    out.ome.zarr/
        zarr.json      attributes: {"ome": {"version": "0.5", "multiscales": [...],
                                            "omero": {...}},
                                    "emseg": {"version", "created", "producer",
                                              "inputs", "parameters", "labels", ...}}
        0/  1/  2/ ... one array per pyramid level, level 0 = full resolution

Level ``k`` carries a ``scale`` transform (its voxel size in nm) and a
``translation`` (the shift of its first voxel centre, half the growth of the
voxel size, as NGFF recommends for window downsampling).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import logging
import math
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emseg._checks import SpacingLike, check_choice, check_label_dtype, parse_spacing
from emseg.errors import (
    EmsegTypeError,
    EmsegValueError,
    FormatError,
    OutputExistsError,
    SpacingWarning,
    UnsupportedFormatError,
)
from emseg.io._atomic import atomic_output, check_output
from emseg.io._image import LazyImage, Region
from emseg.io._pyramid import Level, downsample_mean, downsample_mode, plan_levels

logger = logging.getLogger(__name__)

Compression = Literal["zstd", "blosc", "blosc-lz4", "gzip", "none"]
#: "blosc-lz4" (Blosc LZ4 + byte shuffle) encodes 2-4x faster than zstd and releases the
#: GIL: the codec of blockwise job outputs. Not available for TIFF.
COMPRESSIONS: tuple[str, ...] = ("zstd", "blosc", "blosc-lz4", "gzip", "none")
_VALID_AXES = ("yx", "zyx", "cyx", "czyx")
_ZARR_SUFFIXES = (".zarr",)
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf")
#: Bytes a default chunk aims at (uint8 3D -> 64 x 128 x 128).
_CHUNK_BYTES = 1 << 20


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Input:
    """The image to write, normalised: a reader of boxes plus its geometry."""

    read: Callable[[Region], np.ndarray]
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    spacing: tuple[float, ...]
    spacing_known: bool
    channel_names: tuple[str, ...] | None
    source: str


def _normalize_input(
    image: Any,
    *,
    spacing: SpacingLike,
    axes: str | None,
    channel_names: Sequence[str] | None,
) -> _Input:
    source = ""
    if isinstance(image, LazyImage):
        img_axes = image.axes
        default_spacing: tuple[float, ...] | None = image.spacing if image.spacing_known else None
        names = image.channel_names
        source = image.source

        def read(region: Region) -> np.ndarray:
            return image[region]
    elif type(image).__module__.split(".")[0] == "dask":
        img_axes = ""
        default_spacing, names = None, None

        def read(region: Region) -> np.ndarray:
            return np.asarray(image[region].compute(scheduler="synchronous"))
    elif isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        if not isinstance(image, np.ndarray) and not hasattr(image, "shape"):
            image = np.asarray(image)
        img_axes = ""
        default_spacing, names = None, None

        def read(region: Region) -> np.ndarray:
            return np.asarray(image[region])
    else:
        raise EmsegTypeError(
            "`image` must be a numpy array, an emseg LazyImage or a Dask array; "
            f"got {type(image).__name__}."
        )
    shape = tuple(int(s) for s in image.shape)
    dtype = np.dtype(image.dtype)
    if axes is None:
        axes = img_axes or {2: "yx", 3: "zyx", 4: "czyx"}.get(len(shape), "")
        if not axes:
            raise EmsegValueError(
                f"`image` must have 2 to 4 axes (y-x, z-y-x or c-z-y-x); got shape {shape}."
            )
    if axes not in _VALID_AXES:
        raise EmsegValueError(
            f"`axes` must be one of {', '.join(map(repr, _VALID_AXES))}; got {axes!r}."
        )
    if len(axes) != len(shape):
        raise EmsegValueError(
            f"`axes` {axes!r} has {len(axes)} letters but `image` has shape {shape}."
        )
    if any(s == 0 for s in shape):
        raise EmsegValueError(f"`image` is empty (shape {shape}); there is nothing to write.")
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise EmsegTypeError(
            f"`image` must have a boolean, integer or floating point dtype; got {dtype}."
        )
    n_spatial = sum(a in "zyx" for a in axes)
    if spacing is not None:
        sp, known = parse_spacing(spacing, n_spatial), True
    elif default_spacing is not None and len(default_spacing) == n_spatial:
        sp, known = tuple(default_spacing), True
    else:
        sp, known = (1.0,) * n_spatial, False
    if channel_names is not None:
        names = tuple(str(c) for c in channel_names)
    if names is not None and ("c" not in axes or len(names) != shape[0]):
        raise EmsegValueError(
            f"`channel_names` must have one name per channel (axes {axes!r}, shape {shape}); "
            f"got {list(names)}."
        )
    return _Input(read, shape, dtype, axes, sp, known, names, source)


# --------------------------------------------------------------------------- chunks
def default_chunks(shape: Sequence[int], dtype: Any, *, axes: str) -> tuple[int, ...]:
    """Chunk shape used when none is given: about 1 MiB per chunk, one channel per chunk.

    ``(64, 128, 128)`` for 3D uint8, ``(1024, 1024)`` for 2D uint8; wider
    dtypes get proportionally smaller chunks (down to 4 MiB at most for 64 bit);
    chunks never exceed the shape.
    """
    itemsize = np.dtype(dtype).itemsize
    spatial = axes.replace("c", "")
    base = {"yx": [1024, 1024], "zyx": [64, 128, 128]}[spatial]
    limit = max(_CHUNK_BYTES, 2 * _CHUNK_BYTES if itemsize >= 2 else 0)
    while math.prod(base) * itemsize > limit and max(base) > 16:
        k = max(range(len(base)), key=lambda j: (base[j], -j))  # largest axis, z / y first
        base[k] //= 2
    chunks = ([1] if axes.startswith("c") else []) + base
    return tuple(max(1, min(c, s)) for c, s in zip(chunks, shape, strict=True))


def _parse_chunks(
    chunks: Any, shape: tuple[int, ...], dtype: np.dtype, axes: str
) -> tuple[int, ...]:
    if chunks is None:
        return default_chunks(shape, dtype, axes=axes)
    if isinstance(chunks, int | np.integer):
        chunks = [int(chunks)] * len(shape)
    try:
        values = [int(c) for c in chunks]
    except (TypeError, ValueError):
        raise EmsegTypeError(f"`chunks` must be a sequence of integers; got {chunks!r}.") from None
    if len(values) == len(shape) - 1 and axes.startswith("c"):
        values = [1, *values]
    if len(values) != len(shape) or any(v <= 0 for v in values):
        raise EmsegValueError(
            f"`chunks` must have {len(shape)} positive entries (axes {axes!r}); got {tuple(values)}."
        )
    return tuple(min(c, s) for c, s in zip(values, shape, strict=True))


def _compressors(compression: str, zarr_format: int, dtype: Any = np.uint8) -> Any:
    check_choice(compression, COMPRESSIONS, name="compression")
    if compression == "none":
        return None
    typesize = int(np.dtype(dtype).itemsize)
    if zarr_format == 3:
        from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

        codec: Any = {
            "zstd": lambda: ZstdCodec(level=3),
            "blosc": lambda: BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
            "blosc-lz4": lambda: BloscCodec(
                cname="lz4", clevel=5, shuffle="shuffle", typesize=typesize
            ),
            "gzip": lambda: GzipCodec(level=5),
        }[compression]()
    else:
        import numcodecs

        codec = {
            "zstd": lambda: numcodecs.Zstd(level=3),
            "blosc": lambda: numcodecs.Blosc(
                cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE
            ),
            "blosc-lz4": lambda: numcodecs.Blosc(
                cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE
            ),
            "gzip": lambda: numcodecs.GZip(level=5),
        }[compression]()
    return [codec]


# --------------------------------------------------------------------------- metadata
def _provenance(
    attrs: dict[str, Any] | None, *, labels: bool, known: bool, inputs: list[str], params: dict
) -> dict[str, Any]:
    from emseg import __version__

    prov: dict[str, Any] = {
        "version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "producer": "emseg.io.write_image",
        "inputs": inputs,
        "parameters": params,
    }
    if attrs:
        prov.update(attrs)
    prov["labels"] = bool(labels)
    prov["spacing_known"] = bool(known)
    try:
        json.dumps(prov)
    except (TypeError, ValueError) as exc:
        raise EmsegTypeError(
            f"`attrs` must be JSON-serialisable (str, numbers, lists, dicts); {exc}."
        ) from None
    return prov


def _full(values: Sequence[float], axes: str, fill: float) -> list[float]:
    it = iter(values)
    return [fill if a == "c" else float(next(it)) for a in axes]


def ome_attributes(
    levels: Sequence[Level],
    *,
    axes: str,
    dtype: Any,
    labels: bool,
    zarr_format: int,
    name: str,
    channel_names: Sequence[str] | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The group attributes of an OME-Zarr multiscale (NGFF 0.5 for Zarr v3, 0.4 for v2)."""
    from emseg import __version__

    axes_meta = [
        {"name": "c", "type": "channel"}
        if a == "c"
        else {"name": a, "type": "space", "unit": "nanometer"}
        for a in axes
    ]
    datasets = []
    for i, lv in enumerate(levels):
        transforms: list[dict[str, Any]] = [
            {"type": "scale", "scale": _full(lv.spacing, axes, 1.0)}
        ]
        if i > 0:
            transforms.append(
                {"type": "translation", "translation": _full(lv.translation, axes, 0.0)}
            )
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    method = "downsample_mode" if labels else "downsample_mean"
    ms: dict[str, Any] = {
        "name": name,
        "axes": axes_meta,
        "datasets": datasets,
        "type": "mode" if labels else "mean",
        "metadata": {
            "method": f"emseg.io.{method}",
            "version": __version__,
            "description": (
                "most frequent label of each window (ties: smallest label)"
                if labels
                else "mean of each window, rounded to the dtype for integers"
            ),
            "kwargs": {"factors": [list(lv.factors) for lv in levels[1:]]},
        },
    }
    out: dict[str, Any] = {}
    omero = None
    if "c" in axes:
        dt = np.dtype(dtype)
        lo, hi = (
            (float(np.iinfo(dt).min), float(np.iinfo(dt).max)) if dt.kind in "iu" else (0.0, 1.0)
        )
        n = levels[0].shape[0]
        names = list(channel_names) if channel_names else [f"channel {i}" for i in range(n)]
        omero = {
            "channels": [
                {
                    "label": nm,
                    "active": True,
                    "color": "FFFFFF",
                    "window": {"min": lo, "max": hi, "start": lo, "end": hi},
                }
                for nm in names
            ]
        }
    if zarr_format == 3:
        ome: dict[str, Any] = {"version": "0.5", "multiscales": [ms]}
        if omero:
            ome["omero"] = omero
        out["ome"] = ome
    else:
        ms["version"] = "0.4"
        out["multiscales"] = [ms]
        if omero:
            out["omero"] = omero
    if provenance is not None:
        out["emseg"] = provenance
    return out


# --------------------------------------------------------------------------- streaming
def _blocks(shape: Sequence[int], block: Sequence[int]) -> Iterator[Region]:
    ranges = [range(0, s, b) for s, b in zip(shape, block, strict=True)]
    for starts in itertools.product(*ranges):
        yield tuple(
            slice(st, min(st + b, n)) for st, b, n in zip(starts, block, shape, strict=True)
        )


def _run_blocks(
    work: Callable[[Region], None], regions: Sequence[Region], *, workers: int, bar: Any
) -> None:
    """Run `work` on every region with `workers` threads, at most workers + 1 in flight."""
    if workers <= 1:
        for r in regions:
            work(r)
            bar.update(1)
        return
    it = iter(regions)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emseg-write") as pool:
        pending: set[cf.Future[None]] = set()
        try:
            for r in itertools.islice(it, workers + 1):
                pending.add(pool.submit(work, r))
            while pending:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    f.result()  # re-raises the block's exception
                    bar.update(1)
                for r in itertools.islice(it, len(done)):
                    pending.add(pool.submit(work, r))
        except BaseException:
            for f in pending:
                f.cancel()
            raise


#: Level-0 blocks grow along the last axes up to this many bytes: whole sections are
#: read at once (one read per TIFF page or strip instead of one per chunk column).
_BLOCK_BYTES = 32 << 20


def _widen_block(block: tuple[int, ...], shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Grow `block` by whole multiples along x, then y, while it stays within `_BLOCK_BYTES`.

    Multiples of the original block keep every block chunk-aligned and keep the
    level-1 windows inside one block.
    """
    out = list(block)
    for axis in range(len(out) - 1, max(len(out) - 3, -1), -1):
        while out[axis] < shape[axis]:
            grown = out[axis] + block[axis]
            nbytes = math.prod([*out[:axis], grown, *out[axis + 1 :]]) * itemsize
            if nbytes > _BLOCK_BYTES:
                return tuple(out)
            out[axis] = grown
    return tuple(out)


def _stream_pyramid(
    read0: Callable[[Region], np.ndarray] | None,
    arrays: Sequence[Any],
    levels: Sequence[Level],
    *,
    labels: bool,
    workers: int,
    progress: bool,
    desc: str,
) -> None:
    """Write level 0 from `read0` (unless None) and every further level from the one before.

    Level 0 blocks are downsampled in memory into level 1; level k+1 (k >= 1)
    is built from level k read back from the output. Each block is the
    previous level's chunk shape times the next level's factors, so every
    write covers whole chunks and no two threads touch the same chunk.
    """
    from tqdm.auto import tqdm

    down = downsample_mode if labels else downsample_mean
    plans: list[tuple[int, tuple[int, ...], list[Region]]] = []
    ks = ([0] if read0 is not None else []) + list(
        range(1 if read0 is not None else 0, len(levels) - 1)
    )
    for k in ks:
        src = arrays[k]
        if k + 1 < len(levels):
            nxt = levels[k + 1].factors
        else:  # level 0 alone: blocks of a few chunks
            nxt = tuple(2 if s > c else 1 for s, c in zip(src.shape, src.chunks, strict=True))
        block = tuple(c * f for c, f in zip(src.chunks, nxt, strict=True))
        if k == 0 and read0 is not None:
            block = _widen_block(block, src.shape, np.dtype(src.dtype).itemsize)
        plans.append((k, block, list(_blocks(src.shape, block))))
    total = sum(len(p[2]) for p in plans)
    with tqdm(
        total=total, desc=desc, unit="block", disable=not progress, file=sys.stderr, leave=False
    ) as bar:
        for k, block, regions in plans:
            has_next = k + 1 < len(levels)
            dst_next = arrays[k + 1] if has_next else None
            factors = levels[k + 1].factors if has_next else None
            src_arr = arrays[k]

            def work(
                region: Region,
                k: int = k,
                src_arr: Any = src_arr,
                dst_next: Any = dst_next,
                factors: Any = factors,
            ) -> None:
                if k == 0 and read0 is not None:
                    data = np.asarray(read0(region))
                    if data.dtype != src_arr.dtype:
                        data = data.astype(src_arr.dtype)
                    src_arr[region] = data
                else:
                    data = np.asarray(src_arr[region])
                if dst_next is not None:
                    small = down(data, factors)
                    out = tuple(
                        slice(r.start // f, r.start // f + n)
                        for r, f, n in zip(region, factors, small.shape, strict=True)
                    )
                    dst_next[out] = small

            _run_blocks(work, regions, workers=workers, bar=bar)
            logger.debug("level %d written (%d blocks of %s)", k, len(regions), block)


def _level_plan(
    shape: tuple[int, ...],
    *,
    spacing: tuple[float, ...],
    axes: str,
    chunks: tuple[int, ...],
    pyramid: bool,
) -> tuple[Level, ...]:
    if not pyramid:
        return (Level(shape, spacing, (1,) * len(shape), (0.0,) * len(spacing)),)
    return plan_levels(shape, spacing=spacing, axes=axes, chunks=chunks)


def _create_levels(
    group: Any,
    levels: Sequence[Level],
    *,
    chunks: tuple[int, ...],
    dtype: np.dtype,
    compression: str,
    zarr_format: int,
    fill_value: Any = 0,
    start: int = 0,
) -> list[Any]:
    arrays = []
    for i, lv in enumerate(levels):
        if i < start:
            arrays.append(group[str(i)])
            continue
        lchunks = tuple(min(c, s) for c, s in zip(chunks, lv.shape, strict=True))
        arrays.append(
            group.create_array(
                str(i),
                shape=lv.shape,
                chunks=lchunks,
                dtype=dtype,
                compressors=_compressors(compression, zarr_format, dtype),
                fill_value=fill_value,
                overwrite=True,
            )
        )
    return arrays


# --------------------------------------------------------------------------- public API
def _output_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_ZARR_SUFFIXES):
        return "zarr"
    if name.endswith(_TIFF_SUFFIXES):
        return "tiff"
    raise UnsupportedFormatError(
        f"cannot write {str(path)!r}: the output must end in .zarr / .ome.zarr (OME-Zarr) or "
        f".tif / .tiff (OME-TIFF); got {path.suffix or '(no extension)'!r}."
    )


def _reopen(path: Path, known: bool, spacing: Sequence[float] | None = None) -> LazyImage:
    from emseg.io._open import open_image

    if known and spacing is not None:
        # a TIFF reader drops singleton sections: (1, Y, X) reads back as (Y, X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpacingWarning)
            n_spatial = len(open_image(path).spacing)
        return open_image(path, spacing=tuple(spacing)[len(spacing) - n_spatial :])
    if known:
        return open_image(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpacingWarning)
        return open_image(path)


def write_image(
    image: Any,
    path: str | os.PathLike[str],
    *,
    spacing: SpacingLike = None,
    chunks: Sequence[int] | int | None = None,
    compression: Compression = "zstd",
    pyramid: bool = True,
    labels: bool = False,
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    axes: str | None = None,
    channel_names: Sequence[str] | None = None,
    progress: bool = False,
    zarr_format: Literal[2, 3] = 3,
    workers: int = 2,
) -> LazyImage:
    """Write an image or label volume to OME-Zarr (with a pyramid) or OME-TIFF, atomically.

    Parameters
    ----------
    image : (Y, X), (Z, Y, X), (C, Y, X) or (C, Z, Y, X) array-like
        A numpy array, a :class:`LazyImage` (read lazily; its spacing, axes and
        channel names are the defaults) or a Dask array. Read block by block.
    path : str or path
        Output; ``.zarr`` / ``.ome.zarr`` -> OME-Zarr, ``.tif`` / ``.tiff`` ->
        OME-TIFF (see :func:`write_tiff`).
    spacing : float or sequence of float, optional
        Voxel size in nm (z-y-x). Default: the input's when it is a LazyImage
        with known spacing; otherwise 1.0 per axis, recorded as unknown
        (``emseg.spacing_known = false``) so that reading the output warns.
    chunks : int or sequence of int, optional
        Chunk shape of every level (clipped to the level's shape). Default
        :func:`default_chunks` (64 x 128 x 128 for 3D uint8).
    compression : {"zstd", "blosc", "gzip", "none"}, default "zstd"
    pyramid : bool, default True
        Add downsampled levels (see :func:`~emseg.io.plan_levels`); OME-Zarr only.
    labels : bool, default False
        The data are labels: pyramid levels use the most frequent label
        (never a new id) instead of the mean, and the metadata say so.
        Boolean images are always written as labels.
    overwrite : bool, default False
        Replace an existing `path`; the old output is removed only once the new
        one is complete.
    attrs : dict, optional
        Merged into the ``emseg`` provenance attributes (e.g. ``producer``,
        ``inputs``, ``parameters``); must be JSON-serialisable.
    axes : {"yx", "zyx", "cyx", "czyx"}, optional
        Axes of a numpy / Dask input (default by number of dimensions).
    channel_names : sequence of str, optional
        One name per channel (OME ``omero`` labels).
    progress : bool, default False
        Show a progress bar on stderr.
    zarr_format : {3, 2}, default 3
        Zarr v3 + NGFF 0.5, or Zarr v2 + NGFF 0.4.
    workers : int, default 2
        Threads that read, compress and write blocks.

    Returns
    -------
    LazyImage
        The written file opened again (level 0), same dtype as `image`.

    Raises
    ------
    OutputExistsError
        When `path` exists and `overwrite` is False (checked before any work).
    UnsupportedFormatError
        When the suffix of `path` is neither Zarr nor TIFF.
    EmsegValueError, EmsegTypeError
        For a bad `compression`, `chunks`, `spacing`, `axes` or a non-integer
        image with ``labels=True``.

    Examples
    --------
    >>> img = open_image("stack.tif", spacing=(40, 4, 4))  # doctest: +SKIP
    >>> out = write_image(img, "stack.ome.zarr", progress=True)  # doctest: +SKIP
    >>> out.levels  # doctest: +SKIP
    5
    """
    p = Path(path)
    kind = _output_kind(p)
    check_choice(compression, COMPRESSIONS, name="compression")
    if zarr_format not in (2, 3):
        raise EmsegValueError(f"`zarr_format` must be 2 or 3; got {zarr_format!r}.")
    if not isinstance(workers, int) or workers < 1:
        raise EmsegValueError(f"`workers` must be a positive integer; got {workers!r}.")
    check_output(p, overwrite=overwrite)
    inp = _normalize_input(image, spacing=spacing, axes=axes, channel_names=channel_names)
    if labels:
        check_label_dtype(inp, name="image")
    if inp.dtype == np.bool_:
        labels = True  # a mask: pyramid levels by majority, never a mean
    if kind == "tiff":
        if pyramid and attrs is None:
            logger.debug("TIFF output: writing a single level (pyramids are OME-Zarr only)")
        from emseg.io._write_tiff import _write_tiff

        return _write_tiff(
            inp,
            p,
            compression=compression,
            overwrite=overwrite,
            attrs=attrs,
            labels=labels,
            progress=progress,
        )
    import zarr

    chunk_shape = _parse_chunks(chunks, inp.shape, inp.dtype, inp.axes)
    levels = _level_plan(
        inp.shape, spacing=inp.spacing, axes=inp.axes, chunks=chunk_shape, pyramid=pyramid
    )
    params = {
        "chunks": list(chunk_shape),
        "compression": compression,
        "pyramid": pyramid,
        "labels": labels,
        "zarr_format": zarr_format,
    }
    prov = _provenance(
        attrs,
        labels=labels,
        known=inp.spacing_known,
        inputs=[inp.source] if inp.source else [],
        params=params,
    )
    name = p.name.removesuffix(".zarr").removesuffix(".ome")
    with atomic_output(p, overwrite=overwrite) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        arrays = _create_levels(
            group,
            levels,
            chunks=chunk_shape,
            dtype=inp.dtype,
            compression=compression,
            zarr_format=zarr_format,
        )
        _stream_pyramid(
            inp.read,
            arrays,
            levels,
            labels=labels,
            workers=workers,
            progress=progress,
            desc=f"writing {p.name}",
        )
        group.attrs.update(
            ome_attributes(
                levels,
                axes=inp.axes,
                dtype=inp.dtype,
                labels=labels,
                zarr_format=zarr_format,
                name=name,
                channel_names=inp.channel_names,
                provenance=prov,
            )
        )
    logger.debug("wrote %s (%d levels)", p, len(levels))
    return _reopen(p, inp.spacing_known)


def write_tiff(
    image: Any,
    path: str | os.PathLike[str],
    *,
    spacing: SpacingLike = None,
    compression: Literal["zstd", "gzip", "none"] = "zstd",
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    axes: str | None = None,
    channel_names: Sequence[str] | None = None,
    labels: bool = False,
    progress: bool = False,
) -> LazyImage:
    """Write an image to OME-TIFF page by page (tiles for pages over 64 MB), atomically.

    Parameters are as for :func:`write_image`. The OME-XML holds the
    physical size in nm per axis (omitted when the spacing is unknown), the
    channel names, and the ``emseg`` provenance as JSON in the image
    description. BigTIFF is used above about 2 GB. OME has no 64-bit integer
    type: ``uint64`` / ``int64`` images are written as plain TIFF with the axes
    and spacing in tifffile's JSON description and the y/x spacing in the
    resolution tags (a 3D spacing may then not be read back by every
    reader). Pyramids are not written to TIFF. ``"gzip"`` writes
    Deflate (zlib) compression; ``"zstd"`` needs a reader with Zstandard
    support (tifffile + imagecodecs, Fiji with the OME Bio-Formats plugin).

    Returns
    -------
    LazyImage
        The written file opened again, same dtype as `image`.
    """
    p = Path(path)
    if not p.name.lower().endswith(_TIFF_SUFFIXES):
        raise UnsupportedFormatError(
            f"`path` must end in .tif or .tiff for TIFF output; got {str(p)!r}."
        )
    return write_image(
        image,
        p,
        spacing=spacing,
        compression=compression,
        overwrite=overwrite,
        attrs=attrs,
        axes=axes,
        channel_names=channel_names,
        labels=labels,
        progress=progress,
        pyramid=False,
    )


# --------------------------------------------------------------------------- blockwise outputs
def create_image(
    path: str | os.PathLike[str],
    *,
    shape: Sequence[int],
    dtype: Any,
    chunks: Sequence[int] | None = None,
    spacing: SpacingLike,
    axes: str | None = None,
    labels: bool = False,
    compression: Compression = "zstd",
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    fill_value: Any = 0,
    zarr_format: Literal[2, 3] = 3,
    channel_names: Sequence[str] | None = None,
) -> Any:
    """Create an empty single-level OME-Zarr for blockwise jobs and return its level-0 array.

    The OME-Zarr metadata (one level, `spacing`, provenance) are written up
    front; blocks are then written straight into the returned array (each
    block should cover whole chunks). Call :func:`write_pyramid` when every
    block is written to add the downsampled levels. Unlike :func:`write_image`
    this output is not atomic (jobs that write into it resume instead); with
    `overwrite` an existing `path` is deleted first.

    Parameters
    ----------
    path : str or path
        A ``.zarr`` / ``.ome.zarr`` folder.
    shape : sequence of int
        Shape of the image (axes as `axes`).
    dtype : dtype
        Data type of the array (e.g. ``np.uint64`` for global label ids).
    chunks : sequence of int, optional
        Default :func:`default_chunks`.
    spacing : float or sequence of float or None
        Voxel size in nm (z-y-x); ``None`` records it as unknown.
    axes : {"yx", "zyx", "cyx", "czyx"}, optional
        Default by number of dimensions.
    labels, compression, overwrite, attrs, zarr_format
        As for :func:`write_image`.
    fill_value : scalar, default 0
        Value of chunks never written.
    channel_names : sequence of str, optional
        One name per channel when `axes` starts with ``c`` (OME ``omero`` labels).

    Returns
    -------
    zarr.Array
        Level 0, opened for writing; shape `shape`, dtype `dtype`.
    """
    import zarr

    from emseg._checks import parse_shape

    p = Path(path)
    if _output_kind(p) != "zarr":
        raise UnsupportedFormatError(
            f"`path` must end in .zarr or .ome.zarr for create_image; got {str(p)!r}."
        )
    check_choice(compression, COMPRESSIONS, name="compression")
    if zarr_format not in (2, 3):
        raise EmsegValueError(f"`zarr_format` must be 2 or 3; got {zarr_format!r}.")
    shp = parse_shape(shape)
    dt = np.dtype(dtype)
    if labels and not (np.issubdtype(dt, np.integer) or dt == np.bool_):
        raise EmsegTypeError(f"`dtype` must be an integer type for labels=True; got {dt}.")
    if axes is None:
        axes = {2: "yx", 3: "zyx", 4: "czyx"}.get(len(shp), "")
    if axes not in _VALID_AXES or len(axes) != len(shp):
        raise EmsegValueError(
            f"`axes` must be one of {', '.join(map(repr, _VALID_AXES))} with one letter per "
            f"entry of `shape` {shp}; got {axes!r}."
        )
    n_spatial = len(axes.replace("c", ""))
    if channel_names is not None and ("c" not in axes or len(channel_names) != shp[0]):
        raise EmsegValueError(
            f"`channel_names` must have one name per channel (axes {axes!r}, shape {shp}); "
            f"got {list(channel_names)}."
        )
    known = spacing is not None
    sp = parse_spacing(spacing, n_spatial)
    chunk_shape = _parse_chunks(chunks, shp, dt, axes)
    check_output(p, overwrite=overwrite)
    if p.exists():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    levels = _level_plan(shp, spacing=sp, axes=axes, chunks=chunk_shape, pyramid=False)
    params = {"chunks": list(chunk_shape), "compression": compression, "labels": labels}
    prov = _provenance(
        {"producer": "emseg.io.create_image", **(attrs or {})},
        labels=labels,
        known=known,
        inputs=[],
        params=params,
    )
    group = zarr.open_group(str(p), mode="w", zarr_format=zarr_format)
    arrays = _create_levels(
        group,
        levels,
        chunks=chunk_shape,
        dtype=dt,
        compression=compression,
        zarr_format=zarr_format,
        fill_value=fill_value,
    )
    name = p.name.removesuffix(".zarr").removesuffix(".ome")
    group.attrs.update(
        ome_attributes(
            levels,
            axes=axes,
            dtype=dt,
            labels=labels,
            zarr_format=zarr_format,
            name=name,
            channel_names=channel_names,
            provenance=prov,
        )
    )
    return arrays[0]


def write_pyramid(
    path: str | os.PathLike[str],
    *,
    labels: bool | None = None,
    overwrite: bool = False,
    progress: bool = False,
    workers: int = 2,
) -> LazyImage:
    """Add downsampled levels to a single-level OME-Zarr (e.g. made by :func:`create_image`).

    The levels are built from level 0 on disk, block by block, and listed in
    the metadata only at the end: a run that stops midway leaves the image
    readable with its single level, and running again rebuilds the levels.

    Parameters
    ----------
    path : str or path
        An OME-Zarr written by emseg (:func:`create_image` or :func:`write_image`).
    labels : bool, optional
        Mode (labels) or mean (images) downsampling; default from the file's
        ``emseg.labels`` attribute.
    overwrite : bool, default False
        Rebuild the levels of a file that already has several.
    progress : bool, default False
        Show a progress bar on stderr.
    workers : int, default 2
        Threads.

    Returns
    -------
    LazyImage
        Level 0 of the file, now with ``levels`` > 1 where the image is large
        enough for a pyramid.

    Raises
    ------
    OutputExistsError
        When the file already has several levels and `overwrite` is False.
    FormatError
        When `path` is not an OME-Zarr multiscale.
    """
    import zarr

    from emseg.io._zarr import get_multiscales, open_zarr

    p = Path(path)
    _source, info = open_zarr(p)
    group: Any = zarr.open_group(str(p), mode="r+")
    attrs: dict[str, Any] = dict(group.attrs)
    found = get_multiscales(attrs)
    if found is None:
        raise FormatError(f"{str(p)!r} is not an OME-Zarr multiscale; write it with create_image.")
    ms, version = found
    if len(ms.get("datasets", [])) > 1 and not overwrite:
        raise OutputExistsError(
            f"{str(p)!r} already has {len(ms['datasets'])} levels; pass overwrite=True "
            "(CLI: --overwrite) to rebuild them."
        )
    prov: dict[str, Any] = dict(attrs["emseg"]) if isinstance(attrs.get("emseg"), dict) else {}
    if labels is None:
        labels = bool(prov.get("labels", False))
    known = info.spacing is not None
    sp = info.spacing if info.spacing is not None else (1.0,) * len(info.axes.replace("c", ""))
    path0 = ms["datasets"][0]["path"]
    arr0: Any = group[path0]
    if path0 != "0" or info.axes != "".join(
        str(a["name"] if isinstance(a, dict) else a) for a in ms.get("axes", [])
    ):
        raise FormatError(
            f"{str(p)!r} has a layout emseg does not extend (level 0 at {path0!r}, axes "
            f"{ms.get('axes')}); write it again with write_image."
        )
    chunks = tuple(int(c) for c in arr0.chunks)
    levels = plan_levels(tuple(arr0.shape), spacing=sp, axes=info.axes, chunks=chunks)
    zf = int(group.metadata.zarr_format)
    compression = "zstd"
    if isinstance(prov.get("parameters"), dict):
        compression = str(prov["parameters"].get("compression", "zstd"))
    if compression not in COMPRESSIONS:
        compression = "zstd"
    arrays = _create_levels(
        group,
        levels,
        chunks=chunks,
        dtype=np.dtype(arr0.dtype),
        compression=compression,
        zarr_format=zf,
        start=1,
    )
    arrays[0] = arr0
    _stream_pyramid(
        None,
        arrays,
        levels,
        labels=labels,
        workers=workers,
        progress=progress,
        desc=f"pyramid {p.name}",
    )
    for stale in range(len(levels), len(ms.get("datasets", []))):
        if str(stale) in group:
            del group[str(stale)]
    prov = dict(prov)
    prov["labels"] = bool(labels)
    new = ome_attributes(
        levels,
        axes=info.axes,
        dtype=arr0.dtype,
        labels=labels,
        zarr_format=zf,
        name=str(ms.get("name", p.name)),
        channel_names=info.channel_names,
        provenance=prov,
    )
    group.attrs.update(new)
    logger.info("added %d levels to %s (NGFF %s)", len(levels) - 1, p, version)
    return _reopen(p, known)
