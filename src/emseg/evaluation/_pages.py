"""Reading (Z, Y, X) boxes of a multi-page TIFF stack straight from its pages.

:func:`emseg.io.open_image` reads TIFF files through tifffile's Zarr store,
which is general (tiles, pyramids, channels) but costs about 50 ms per 8 MiB
box on a plain uncompressed stack, several times the cost of the read
itself. The evaluation reads every voxel of both volumes once, so for the
common case of a plain stack (one 2D page per section, one sample per
pixel, level 0) :func:`page_reader` swaps in a :class:`PageSource`:

* uncompressed pages stored in one piece: the rows of a box are read with
  one ``readinto`` per section (file I/O that releases the GIL; no page is
  decoded, no memory map whose pages would count as resident memory);
* any other page (compressed, tiled, strips out of order): the page is
  decoded by tifffile and the box cropped from it.

The values are those of ``open_image(path)[box]`` exactly; anything else
(OME pyramids, channels, time series) keeps the general reader.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["PageSource", "page_reader"]


class PageSource:
    """A :class:`emseg.io.Source` over the pages of a TIFF stack (one page per section).

    Parameters
    ----------
    path : str
        The TIFF file.
    shape : tuple of int
        (Z, Y, X) or (Y, X): one page per z, each (Y, X).
    dtype : numpy dtype
        The stored dtype (native byte order is returned).
    chunks : tuple of int
        Reported chunk shape (one page).
    offsets : (Z,) ndarray of int64 or None
        File offset of each page's pixels when every page is uncompressed and
        stored in one piece (rows in order); None to decode pages with tifffile.
    byteorder : {"<", ">"}
        The file's byte order.
    """

    def __init__(
        self,
        path: str,
        *,
        shape: tuple[int, ...],
        dtype: Any,
        chunks: tuple[int, ...],
        offsets: np.ndarray | None,
        byteorder: str,
    ) -> None:
        self.path = path
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.chunks = tuple(int(c) for c in chunks)
        self.offsets = offsets
        self.byteorder = byteorder

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """The voxels of `region` (one step-1 slice per axis), native byte order."""
        if len(self.shape) == 2:
            zs, (ys, xs) = slice(0, 1), region
        else:
            zs, ys, xs = region
        nz, ny = zs.stop - zs.start, ys.stop - ys.start
        nx = xs.stop - xs.start
        out = np.empty((nz, ny, nx), self.dtype)
        if self.offsets is not None:
            self._read_raw(out, zs, ys, xs)
        else:
            self._read_decoded(out, zs, ys, xs)
        return out[0] if len(self.shape) == 2 else out

    def _read_raw(self, out: np.ndarray, zs: slice, ys: slice, xs: slice) -> None:
        assert self.offsets is not None
        width = self.shape[-1]
        stored = self.dtype.newbyteorder(self.byteorder)
        row_bytes = width * stored.itemsize
        full_rows = xs.start == 0 and xs.stop == width
        buf = None if full_rows else np.empty((ys.stop - ys.start, width), stored)
        with open(self.path, "rb", buffering=0) as f:
            for i, z in enumerate(range(zs.start, zs.stop)):
                target: np.ndarray = out[i] if buf is None else buf
                f.seek(int(self.offsets[z]) + ys.start * row_bytes)
                view = target.data.cast("B")
                got = 0
                while got < view.nbytes:
                    n = f.readinto(view[got:])
                    if not n:
                        raise OSError(
                            f"{self.path!r} ended inside page {z}: the file is truncated."
                        )
                    got += n
                if not full_rows:
                    out[i] = target[:, xs]
        if full_rows and stored != self.dtype:  # raw bytes were read into `out`
            out.byteswap(inplace=True)

    def _read_decoded(self, out: np.ndarray, zs: slice, ys: slice, xs: slice) -> None:
        import tifffile

        with tifffile.TiffFile(self.path) as tif:  # one handle per read: thread-safe
            pages = tif.series[0].pages
            for i, z in enumerate(range(zs.start, zs.stop)):
                page: Any = pages[z]
                if page is None:
                    raise OSError(f"{self.path!r}: page {z} cannot be read.")
                out[i] = np.asarray(page.asarray()).reshape(self.shape[-2:])[ys, xs]


def page_reader(image: Any) -> Any:
    """`image` with its TIFF reads served by a :class:`PageSource` when the file allows.

    Parameters
    ----------
    image : LazyImage or array
        Anything; only a level-0 ``"zyx"`` / ``"yx"`` TIFF LazyImage whose
        first series is one single-sample page per section is changed.

    Returns
    -------
    LazyImage or the input unchanged
        Same shape, dtype, spacing and values as `image`.
    """
    from emseg.io import LazyImage

    if not isinstance(image, LazyImage) or image.format != "tiff" or image.level != 0:
        return image
    if image.axes not in ("zyx", "yx"):
        return image
    try:
        source = _page_source(image)
    except Exception as exc:  # any surprise in the file: the general reader still works
        log.debug("page reader not used for %s: %s", image.source, exc)
        return image
    if source is None:
        return image
    return LazyImage(
        source,
        spacing=image.spacing,
        axes=image.axes,
        unit=image.unit,
        channel_names=image.channel_names,
        path=image.source,
        format=image.format,
        level=image.level,
        levels=image.levels,
        spacing_known=image.spacing_known,
        attrs=image.attrs,
    )


def _page_source(image: Any) -> PageSource | None:
    import tifffile

    path = os.fspath(image.source)
    if not os.path.isfile(path):
        return None
    shape = tuple(int(s) for s in image.shape)
    n_pages = shape[0] if len(shape) == 3 else 1
    dtype = np.dtype(image.dtype)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if len(series.pages) != n_pages or np.dtype(series.dtype) != dtype:
            return None
        page_bytes = shape[-2] * shape[-1] * dtype.itemsize
        key = series.keyframe
        if tuple(key.shape) != shape[-2:] or key.samplesperpixel != 1:
            return None
        plain = (
            key.compression == 1 and key.fillorder == 1 and key.bitspersample == 8 * dtype.itemsize
        )
        offsets: np.ndarray | None = None
        if series.dataoffset is not None and plain:
            # the whole series is stored contiguously, page after page
            offsets = int(series.dataoffset) + page_bytes * np.arange(n_pages, dtype=np.int64)
        elif plain and not key.is_tiled:
            offs: list[int] | None = []
            for page in series.pages:
                if (
                    page is None
                    or not page.is_contiguous
                    or tuple(page.shape) != shape[-2:]
                    or sum(page.databytecounts) != page_bytes
                ):
                    offs = None
                    break
                offs.append(int(page.dataoffsets[0]))  # type: ignore[union-attr]
            offsets = None if offs is None else np.asarray(offs, np.int64)
        byteorder = tif.byteorder
    chunks = (1, *shape[-2:]) if len(shape) == 3 else shape
    return PageSource(path, shape=shape, dtype=dtype, chunks=chunks, offsets=offsets,
                      byteorder=byteorder)  # fmt: skip
