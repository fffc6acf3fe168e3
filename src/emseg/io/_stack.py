"""Lazy readers for a folder of 2D slices and for single 2D image files.

A folder stack is every ``.png``, ``.tif`` / ``.tiff``, ``.jpg`` / ``.jpeg``
and ``.bmp`` file in the folder (not in sub-folders), in natural sort order
(``slice2`` before ``slice10``); hidden files and other files are ignored.
Each slice's header is read when the stack is opened (PIL / tifffile read
only the header) and every slice must have the shape and dtype of the first:
the error names the odd file. A read opens only the slices it touches, so the
chunks are one slice: ``(1, Y, X)`` (``(C, 1, Y, X)`` for RGB).

Neither stacks nor single images carry a voxel size emseg trusts (PNG / JPEG
DPI is meant for printing), so spacing is None: pass ``spacing=`` to
:func:`emseg.io.open_image`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emseg.errors import DatasetNotFoundError, EmsegError, EmsegValueError, FormatError
from emseg.io._image import ImageInfo, Region

#: File suffixes read as slices of a folder stack.
SLICE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

# PIL mode -> (numpy dtype, samples per pixel)
_PIL_MODES: dict[str, tuple[str, int]] = {
    "1": ("bool", 1),
    "L": ("uint8", 1),
    "P": ("uint8", 1),
    "LA": ("uint8", 2),
    "RGB": ("uint8", 3),
    "RGBA": ("uint8", 4),
    "I": ("int32", 1),
    "I;16": ("uint16", 1),
    "I;16L": ("uint16", 1),
    "I;16B": ("uint16", 1),
    "I;16N": ("uint16", 1),
    "F": ("float32", 1),
}


@dataclass(frozen=True)
class SliceHeader:
    """Geometry of one 2D image file, read from its header only."""

    shape: tuple[int, int]
    channels: int  # 1 for a grey image, else samples per pixel
    dtype: np.dtype


def _is_tiff(path: str) -> bool:
    return path.lower().endswith((".tif", ".tiff"))


def read_header(path: str) -> SliceHeader:
    """Shape, channels and dtype of a 2D image file without decoding its pixels."""
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) != 1:
                    raise FormatError(
                        f"{path!r} has {len(tif.pages)} pages; a slice must be one 2D image. "
                        "Open a multi-page TIFF directly with open_image(path)."
                    )
                page = tif.pages[0]
                shape = tuple(int(s) for s in page.shape)
                dtype = np.dtype(page.dtype)
            if len(shape) == 2:
                return SliceHeader((shape[0], shape[1]), 1, dtype)
            if (
                len(shape) == 3 and getattr(page, "planarconfig", 1) == 1
            ):  # contiguous samples (Y, X, S)
                return SliceHeader((shape[0], shape[1]), shape[2], dtype)
            raise FormatError(f"{path!r} is not a 2D image (page shape {shape}).")
        from PIL import Image

        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
        if mode not in _PIL_MODES:
            raise FormatError(
                f"{path!r} has the image mode {mode!r}, which emseg does not read; "
                f"convert it to one of {', '.join(_PIL_MODES)}."
            )
        name, channels = _PIL_MODES[mode]
        return SliceHeader((height, width), channels, np.dtype(name))
    except EmsegError:
        raise
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no such file: {path!r}.") from None
    except Exception as exc:
        raise FormatError(
            f"{path!r} is not a readable image (corrupt or truncated): {type(exc).__name__}: {exc}"
        ) from exc


def read_slice(path: str) -> np.ndarray:
    """Decode a whole 2D image: (Y, X) or, with samples, (C, Y, X)."""
    try:
        if _is_tiff(path):
            import tifffile

            data = tifffile.imread(path, key=0)
        else:
            from PIL import Image

            with Image.open(path) as im:
                data = np.asarray(im)
    except EmsegError:
        raise
    except Exception as exc:
        raise FormatError(
            f"cannot decode {path!r} (corrupt or truncated image): {type(exc).__name__}: {exc}"
        ) from exc
    data = np.asarray(data)
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    if data.ndim == 3:
        data = np.moveaxis(data, -1, 0)
    return data


class StackSource:
    """A lazy source over a list of 2D image files: one slice per z."""

    def __init__(self, files: list[str], header: SliceHeader) -> None:
        self.files = list(files)
        y, x = header.shape
        self.dtype = np.dtype(header.dtype)
        self._channels = header.channels
        if header.channels > 1:
            self.shape: tuple[int, ...] = (header.channels, len(files), y, x)
            self.chunks: tuple[int, ...] = (header.channels, 1, y, x)
        else:
            self.shape = (len(files), y, x)
            self.chunks = (1, y, x)

    def read(self, region: Region) -> np.ndarray:
        if self._channels > 1:
            c, z, y, x = region
        else:
            z, y, x = region
        planes = []
        for i in range(z.start, z.stop):
            data = read_slice(self.files[i])
            expected = (self._channels, *self.shape[-2:]) if self._channels > 1 else self.shape[-2:]
            if data.shape != tuple(expected):
                raise FormatError(
                    f"slice {self.files[i]!r} decoded to shape {data.shape}, expected "
                    f"{tuple(expected)}; the file changed since the stack was opened."
                )
            planes.append(data[c, y, x] if self._channels > 1 else data[y, x])
        if self._channels > 1:
            n_c = c.stop - c.start
            if not planes:
                return np.empty((n_c, 0, y.stop - y.start, x.stop - x.start), dtype=self.dtype)
            return np.stack(planes, axis=1).astype(self.dtype, copy=False)
        if not planes:
            return np.empty((0, y.stop - y.start, x.stop - x.start), dtype=self.dtype)
        return np.stack(planes, axis=0).astype(self.dtype, copy=False)


class SingleImageSource:
    """A source over one 2D image file, decoded whole on each read."""

    def __init__(self, path: str, header: SliceHeader) -> None:
        self.path = path
        self.dtype = np.dtype(header.dtype)
        self.shape: tuple[int, ...] = (
            (header.channels, *header.shape) if header.channels > 1 else header.shape
        )
        self.chunks = self.shape

    def read(self, region: Region) -> np.ndarray:
        data = read_slice(self.path)
        if data.shape != self.shape:
            raise FormatError(
                f"{self.path!r} decoded to shape {data.shape}, expected {self.shape}; "
                "the file changed since it was opened."
            )
        return np.ascontiguousarray(data[region]).astype(self.dtype, copy=False)


def list_slices(folder: str) -> list[str]:
    """The slice files of `folder`, natural sort order, hidden and non-image files skipped."""
    from natsort import natsorted

    names = [
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file()
        and not entry.name.startswith(".")
        and entry.name.lower().endswith(SLICE_SUFFIXES)
    ]
    return [os.path.join(folder, n) for n in natsorted(names)]


def _check_args(kind: str, dataset: Any, level: int) -> None:
    if dataset is not None:
        raise EmsegValueError(f"`dataset` must be None for {kind}; got {dataset!r}.")
    if level != 0:
        raise EmsegValueError(f"`level` must be 0 for {kind} (it has one level); got {level}.")


def open_stack(
    path: str, *, dataset: str | None = None, level: int = 0
) -> tuple[StackSource, ImageInfo]:
    """Open a folder of 2D slices lazily as a z-y-x volume.

    Parameters
    ----------
    path : str
        The folder (see the module docstring for which files count as slices).
    dataset, level
        Must be None and 0.

    Returns
    -------
    source : StackSource
        Axes ``"zyx"`` (``"czyx"`` for RGB / multi-sample slices); dtype of the slices.
    info : ImageInfo
        Spacing None (slices carry no trusted voxel size).

    Raises
    ------
    DatasetNotFoundError
        When the folder does not exist or holds no image file.
    FormatError
        When a slice differs in shape, channels or dtype from the first (the
        message names the file), or cannot be read.
    """
    path = os.fspath(path)
    _check_args("a folder of slices", dataset, level)
    if not Path(path).is_dir():
        raise DatasetNotFoundError(f"no such folder: {path!r}.")
    files = list_slices(path)
    if not files:
        raise DatasetNotFoundError(
            f"the folder {path!r} holds no image slices ({', '.join(SLICE_SUFFIXES)})."
        )
    first = read_header(files[0])
    for f in files[1:]:
        h = read_header(f)
        if h != first:
            raise FormatError(
                f"slice {os.path.basename(f)!r} in {path!r} has shape {h.shape}, "
                f"{h.channels} channel(s) and dtype {h.dtype}, but the first slice "
                f"{os.path.basename(files[0])!r} has shape {first.shape}, {first.channels} "
                f"channel(s) and dtype {first.dtype}; every slice must match. Remove or fix it."
            )
    source = StackSource(files, first)
    axes = "czyx" if first.channels > 1 else "zyx"
    info = ImageInfo(
        axes=axes,
        spacing=None,
        levels=1,
        level_shapes=(source.shape,),
        format="stack",
        attrs={"files": len(files)},
    )
    return source, info


def open_single_image(
    path: str, *, dataset: str | None = None, level: int = 0
) -> tuple[SingleImageSource, ImageInfo]:
    """Open one 2D image file (png, jpg, bmp).

    Returns
    -------
    source : SingleImageSource
        Axes ``"yx"`` (``"cyx"`` for RGB / RGBA / grey + alpha); dtype from the
        image mode (bool for 1-bit, uint8, uint16, int32 or float32).
    info : ImageInfo
        Spacing None.

    Raises
    ------
    FormatError
        When the file is not a readable image.
    """
    path = os.fspath(path)
    _check_args("a single 2D image", dataset, level)
    if not Path(path).is_file():
        raise DatasetNotFoundError(f"no such file: {path!r}.")
    header = read_header(path)
    source = SingleImageSource(path, header)
    axes = "cyx" if header.channels > 1 else "yx"
    info = ImageInfo(
        axes=axes, spacing=None, levels=1, level_shapes=(source.shape,), format="image2d"
    )
    return source, info
