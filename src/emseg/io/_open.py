"""``open_image``: one entry point for every EM format, each read lazily."""

from __future__ import annotations

import importlib
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emseg._checks import SpacingLike, parse_spacing
from emseg.errors import (
    DatasetNotFoundError,
    EmsegValueError,
    SpacingWarning,
    UnsupportedFormatError,
)
from emseg.io._image import ImageInfo, LazyImage, Source

PathLike = str | os.PathLike[str]

Reader = Callable[..., tuple[Source, ImageInfo]]
"""``reader(path, *, dataset, level) -> (source, info)``."""


@dataclass(frozen=True)
class FormatSpec:
    """A format emseg reads: its name, file extensions and reader function."""

    name: str
    extensions: tuple[str, ...]
    reader: str  # "module:function", imported on first use
    description: str

    def load(self) -> Reader:
        module, func = self.reader.split(":")
        return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return,unused-ignore]


FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in [
        FormatSpec(
            "tiff",
            (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".tf8", ".tf2"),
            "emseg.io._tiff:open_tiff",
            "TIFF, BigTIFF, OME-TIFF, ImageJ hyperstacks",
        ),
        FormatSpec(
            "stack",
            (),
            "emseg.io._stack:open_stack",
            "a folder of 2D slices (.png, .tif, .jpg), natural sort order",
        ),
        FormatSpec(
            "hdf5",
            (".h5", ".hdf5", ".hdf", ".he5"),
            "emseg.io._hdf5:open_hdf5",
            "HDF5 (file.h5:/path/to/dataset)",
        ),
        FormatSpec(
            "zarr",
            (".zarr", ".ome.zarr"),
            "emseg.io._zarr:open_zarr",
            "Zarr v2/v3 and OME-Zarr multiscales",
        ),
        FormatSpec("n5", (".n5",), "emseg.io._n5:open_n5", "N5"),
        FormatSpec(
            "mrc",
            (".mrc", ".rec", ".st", ".ali", ".map", ".mrcs"),
            "emseg.io._mrc:open_mrc",
            "MRC (cryo-ET / EM, voxel size from the header)",
        ),
        FormatSpec(
            "image2d",
            (".png", ".jpg", ".jpeg", ".bmp"),
            "emseg.io._stack:open_single_image",
            "a single 2D image (.png, .jpg)",
        ),
    ]
}

_HDF5_PATH = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5))(?::(?P<dataset>.*))?$", re.IGNORECASE)
_STACK_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def supported_formats() -> str:
    """A one-line list of the formats and extensions emseg reads."""
    parts = []
    for spec in FORMATS.values():
        ext = ", ".join(spec.extensions) if spec.extensions else "folder"
        parts.append(f"{spec.name} ({ext})")
    return "; ".join(parts)


def split_dataset_path(path: PathLike) -> tuple[str, str | None]:
    """Split ``file.h5:/group/data`` into the file and the dataset inside it."""
    text = os.fspath(path)
    m = _HDF5_PATH.match(text)
    if m and m.group("dataset") is not None:
        return m.group("file"), m.group("dataset") or None
    return text, None


def detect_format(path: PathLike) -> str:
    """Return the name of the format that reads `path` (a key of :data:`FORMATS`).

    Raises
    ------
    DatasetNotFoundError
        When `path` does not exist.
    UnsupportedFormatError
        When nothing reads it; the message lists the supported formats.
    """
    file, _ = split_dataset_path(path)
    p = Path(file)
    if not p.exists():
        raise DatasetNotFoundError(f"no such file or folder: {file!r}.")
    name = p.name.lower()
    if p.is_dir():
        if name.endswith(".n5") or (p / "attributes.json").exists():
            return "n5"
        if name.endswith(".zarr") or any(
            (p / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup", ".zattrs")
        ):
            return "zarr"
        if any(c.suffix.lower() in _STACK_SUFFIXES for c in p.iterdir() if c.is_file()):
            return "stack"
        raise UnsupportedFormatError(
            f"the folder {file!r} is neither a Zarr / N5 container nor a stack of 2D slices "
            f"(.png, .tif, .jpg). emseg reads: {supported_formats()}."
        )
    for spec in FORMATS.values():
        if any(name.endswith(ext) for ext in spec.extensions):
            return spec.name
    raise UnsupportedFormatError(
        f"cannot read {file!r}: the extension {p.suffix or '(none)'!r} is not supported. "
        f"emseg reads: {supported_formats()}."
    )


def open_image(
    path: PathLike,
    *,
    spacing: SpacingLike = None,
    level: int = 0,
    dataset: str | None = None,
    format: str | None = None,
) -> LazyImage:
    """Open an EM image or label volume lazily, with its voxel size in nm.

    Parameters
    ----------
    path : str or path
        A file or folder in any supported format (see :data:`FORMATS`). An
        HDF5 dataset can be named in the path: ``"file.h5:/volumes/raw"``.
    spacing : float or sequence of float, optional
        Voxel size in nm (z, y, x), overriding the file's metadata. When
        neither the file nor this argument gives it, the spacing is 1.0 per
        axis and a :class:`~emseg.errors.SpacingWarning` says how to set it.
    level : int, default 0
        The pyramid level to open in a multiscale file (OME-Zarr, N5); 0 is
        full resolution.
    dataset : str, optional
        The dataset (array) inside a container (HDF5, Zarr, N5). Required when
        the container holds several and none is named in `path`.
    format : str, optional
        Force a reader (a key of :data:`FORMATS`) instead of detecting it.

    Returns
    -------
    LazyImage
        Nothing is read until the image is sliced. ``spacing`` has one entry
        per spatial axis.

    Raises
    ------
    DatasetNotFoundError
        When the path (or the dataset inside it) does not exist.
    UnsupportedFormatError, FormatError
        When the file is not a supported format, or is corrupt or truncated.
    EmsegValueError
        When `spacing` has the wrong length or a non-positive entry, or
        `level` does not exist.

    Examples
    --------
    >>> img = open_image("stack.ome.zarr", level=0)  # doctest: +SKIP
    >>> img.spacing, img.shape  # doctest: +SKIP
    ((40.0, 4.0, 4.0), (200, 4096, 4096))
    >>> block = img[100, 2048:2560, 2048:2560]  # reads only the chunks it touches  # doctest: +SKIP
    """
    if not isinstance(level, int) or level < 0:
        raise EmsegValueError(f"`level` must be a non-negative integer; got {level!r}.")
    file, ds_in_path = split_dataset_path(path)
    if dataset is None:
        dataset = ds_in_path
    fmt = format or detect_format(file)
    if fmt not in FORMATS:
        raise EmsegValueError(
            f"`format` must be one of {', '.join(map(repr, FORMATS))}; got {fmt!r}."
        )
    source, info = FORMATS[fmt].load()(file, dataset=dataset, level=level)
    n_spatial = sum(a in "zyx" for a in info.axes)
    display = file if dataset is None else f"{file}:{dataset}"
    if spacing is not None:
        final = parse_spacing(spacing, n_spatial)
        known = True
    elif info.spacing is not None:
        final = parse_spacing(info.spacing, n_spatial, name=f"spacing stored in {display}")
        known = True
    else:
        final = (1.0,) * n_spatial
        known = False
        axes_hint = " ".join(a.upper() for a in info.axes if a in "zyx")
        warnings.warn(
            f"the voxel size of {display!r} is not stored in the file; using 1.0 nm per axis. "
            f"Pass spacing=({', '.join(a for a in info.axes if a in 'zyx')}) in nm to open_image "
            f"(CLI: --spacing {axes_hint}).",
            SpacingWarning,
            stacklevel=2,
        )
    return LazyImage(
        source,
        spacing=final,
        axes=info.axes,
        unit="nanometer",
        channel_names=info.channel_names,
        path=display,
        format=info.format or fmt,
        level=level,
        levels=info.levels,
        spacing_known=known,
        attrs=info.attrs,
    )
