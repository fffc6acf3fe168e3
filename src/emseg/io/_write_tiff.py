"""The TIFF half of :func:`emseg.io.write_image`: OME-TIFF written page by page (or tile by tile)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.io._atomic import atomic_output
from emseg.io._image import LazyImage
from emseg.io._write import _Input, _provenance, _reopen, logger

_BIGTIFF_BYTES = 2**31 - 2**25  # switch to BigTIFF a little below the 2 GB signed-offset limit
#: TIFF pages larger than this are written as 1024 x 1024 tiles, one row of tiles in memory.
_TIFF_TILE_ABOVE = 64 << 20
#: Pages are read from the input in slabs of about this many bytes.
_TIFF_READ_BYTES = 16 << 20

_TIFF_COMPRESSION = {"none": None, "zstd": "zstd", "gzip": "zlib"}


def _write_tiff(
    inp: _Input,
    path: Path,
    *,
    compression: str,
    overwrite: bool,
    attrs: dict[str, Any] | None,
    labels: bool,
    progress: bool,
) -> LazyImage:
    import tifffile
    from tqdm.auto import tqdm

    if compression not in _TIFF_COMPRESSION:
        raise EmsegValueError(
            f"`compression` must be one of {', '.join(map(repr, _TIFF_COMPRESSION))} for TIFF "
            f"output; got {compression!r} ('blosc' exists for Zarr only)."
        )
    if inp.dtype == np.bool_:
        raise EmsegTypeError("`image` is boolean; cast it to uint8 before writing TIFF.")
    prov = _provenance(
        attrs,
        labels=labels,
        known=inp.spacing_known,
        inputs=[inp.source] if inp.source else [],
        params={"compression": compression},
    )
    shape, axes = inp.shape, inp.axes
    ny, nx = shape[-2], shape[-1]
    lead = shape[:-2]
    page_bytes = ny * nx * inp.dtype.itemsize
    ome = inp.dtype.str[1:] not in ("u8", "i8")  # OME has no 64-bit integer pixel type
    extra: dict[str, Any] = {}
    if ome:
        meta: dict[str, Any] = {"axes": axes.upper(), "Description": "emseg " + json.dumps(prov)}
        if inp.spacing_known:
            for a, s in zip(axes.replace("c", ""), inp.spacing, strict=True):
                meta[f"PhysicalSize{a.upper()}"] = float(s)
                meta[f"PhysicalSize{a.upper()}Unit"] = "nm"
        if inp.channel_names:
            meta["Channel"] = {"Name": list(inp.channel_names)}
    else:
        # a tifffile "shaped" TIFF: axes and spacing in the JSON description, y/x
        # spacing also in the resolution tags (micrometre)
        meta = {"axes": axes.upper(), "emseg": prov}
        if inp.spacing_known:
            meta["spacing_nm"] = list(inp.spacing)
            extra = {
                "resolution": (1e3 / inp.spacing[-1], 1e3 / inp.spacing[-2]),  # x, y
                "resolutionunit": tifffile.RESUNIT.MICROMETER,
            }
        if inp.channel_names:
            meta["channel_names"] = list(inp.channel_names)
        logger.info("%s: 64-bit integers are not OME types; writing a plain TIFF", path)
    tiled = page_bytes > _TIFF_TILE_ABOVE
    tile = (1024, 1024)
    n_pages = math.prod(lead) if lead else 1
    pages_per_read = max(1, min(n_pages, _TIFF_READ_BYTES // max(page_bytes, 1)))

    def page_index(i: int) -> tuple[int, ...]:
        return tuple(int(v) for v in np.unravel_index(i, lead)) if lead else ()

    def data_iter(bar: Any) -> Iterator[np.ndarray]:
        if not tiled:
            i = 0
            while i < n_pages:
                idx = page_index(i)
                # read up to pages_per_read consecutive pages along the last lead axis
                take = min(pages_per_read, n_pages - i, lead[-1] - idx[-1]) if lead else 1
                region = tuple(slice(v, v + 1) for v in idx[:-1])
                if lead:
                    region += (slice(idx[-1], idx[-1] + take),)
                region += (slice(0, ny), slice(0, nx))
                block = np.asarray(inp.read(region)).reshape(take, ny, nx)
                for pg in block:
                    yield np.ascontiguousarray(pg, dtype=inp.dtype)
                bar.update(take)
                i += take
            return
        for i in range(n_pages):
            idx = page_index(i)
            lead_region = tuple(slice(v, v + 1) for v in idx)
            for y0 in range(0, ny, tile[0]):
                y1 = min(y0 + tile[0], ny)
                row = np.asarray(inp.read((*lead_region, slice(y0, y1), slice(0, nx))))
                row = row.reshape(y1 - y0, nx)
                for x0 in range(0, nx, tile[1]):
                    t = np.zeros(tile, dtype=inp.dtype)
                    part = row[:, x0 : x0 + tile[1]]
                    t[: part.shape[0], : part.shape[1]] = part
                    yield t
            bar.update(1)

    with atomic_output(path, overwrite=overwrite) as tmp:
        total = math.prod(shape) * inp.dtype.itemsize
        with (
            tqdm(
                total=n_pages,
                desc=f"writing {path.name}",
                unit="page",
                disable=not progress,
                file=sys.stderr,
                leave=False,
            ) as bar,
            tifffile.TiffWriter(tmp, bigtiff=total > _BIGTIFF_BYTES, ome=ome) as tw,
        ):
            if not tiled and n_pages <= pages_per_read:
                # small enough to pass whole (tifffile mis-encodes iterators of 1x1 pages)
                data: Any = np.asarray(inp.read(tuple(slice(0, n) for n in shape)))
                bar.update(n_pages)
            else:
                data = data_iter(bar)
            tw.write(
                data,
                shape=shape,
                dtype=inp.dtype,
                photometric="minisblack",
                compression=_TIFF_COMPRESSION[compression],
                tile=tile if tiled else None,
                metadata=meta,
                **extra,
            )
    # a plain (non-OME) TIFF may hold a 3D spacing that readers do not find: pass it
    return _reopen(path, inp.spacing_known, None if ome else inp.spacing)
