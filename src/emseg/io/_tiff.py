"""Lazy reader for TIFF, BigTIFF, OME-TIFF and ImageJ hyperstacks (via tifffile).

The image is read through tifffile's Zarr store over the first series, so a
slice reads only the pages, strips or tiles it touches. Axes are mapped from
tifffile's letters to emseg's (channels first):

* ``Z``, ``Q`` and ``I`` (generic multi-page) become ``z``;
* ``C`` and the RGB samples ``S`` become ``c``;
* singleton axes (``T``, ``C``, ``Z``, ...) are dropped;
* a time series (``T`` > 1) is refused unless one time point is picked with
  ``dataset="t=K"``.

Spacing is read, in this order, from the OME-XML ``PhysicalSizeX/Y/Z`` (with
their units, µm by default), from ImageJ metadata (``XResolution`` /
``YResolution`` in pixels per ``unit``, and ``spacing`` for z; ImageJ's default
z step of one unit applies when ``spacing`` is absent), and, for 2D images only,
from the TIFF ``ResolutionUnit`` when it is centimetre, millimetre or
micrometre (inch means printer DPI and is ignored). Pyramid levels of an
OME-TIFF (SubIFDs) scale the spacing by the ratio of the shapes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

import numpy as np

from emseg.errors import EmsegError, EmsegValueError, FormatError
from emseg.io._image import ImageInfo, Region, unit_to_nm

_DEPTH = "ZQI"
_CHANNEL = "CS"
_T_KEY = re.compile(r"^\s*t\s*=\s*(-?\d+)\s*$", re.IGNORECASE)


class AxisMappedSource:
    """A :class:`~emseg.io.Source` that fixes some axes of an array and reorders the rest.

    Parameters
    ----------
    array : numpy-sliceable
        The stored array (zarr, h5py, memmap...); slicing it must read lazily.
    index : sequence of (int or None)
        One entry per stored axis: an int keeps only that position (the axis
        is dropped), ``None`` keeps the axis.
    order : sequence of int
        The kept stored axes in output order.
    chunks : sequence of int, optional
        The stored chunk shape (defaults to ``array.chunks``).
    """

    def __init__(
        self,
        array: Any,
        *,
        index: Sequence[int | None],
        order: Sequence[int],
        chunks: Sequence[int] | None = None,
    ) -> None:
        self._array = array
        self._index = tuple(index)
        self._order = tuple(order)
        kept = [i for i, k in enumerate(self._index) if k is None]
        if sorted(self._order) != kept:
            raise EmsegValueError(
                f"`order` must list the kept axes {kept} in some order; got {self._order}."
            )
        stored_shape = tuple(int(s) for s in array.shape)
        stored_chunks = tuple(
            chunks if chunks is not None else getattr(array, "chunks", None) or stored_shape
        )
        self.shape = tuple(stored_shape[i] for i in self._order)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(
            max(1, min(int(stored_chunks[i]), max(stored_shape[i], 1))) for i in self._order
        )
        # where each kept stored axis appears after slicing (stored order, kept only)
        self._transpose = tuple(kept.index(i) for i in self._order)

    def read(self, region: Region) -> np.ndarray:
        key: list[Any] = []
        out_pos = {stored: pos for pos, stored in enumerate(self._order)}
        for i, k in enumerate(self._index):
            key.append(k if k is not None else region[out_pos[i]])
        data = np.asarray(self._array[tuple(key)])
        return (
            data.transpose(self._transpose) if self._transpose != tuple(range(data.ndim)) else data
        )


class _LogCollector(logging.Handler):
    """Collects tifffile's error messages (it logs, rather than raises, on broken IFDs)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class TiffSource:
    """A lazy source over one series (and level) of a TIFF file."""

    def __init__(
        self,
        path: str,
        *,
        level: int,
        index: Sequence[int | None],
        order: Sequence[int],
        tif: Any = None,
    ) -> None:
        self.path = path
        self.level = level
        self._index = tuple(index)
        self._order = tuple(order)
        self._lock = threading.Lock()
        self._view: AxisMappedSource | None = None
        self._finalizer: Any = None
        self._open(tif)
        assert self._view is not None
        self.shape = self._view.shape
        self.dtype = self._view.dtype
        self.chunks = self._view.chunks

    def _open(self, tif: Any = None) -> None:
        import tifffile
        import zarr

        if tif is None:
            tif = tifffile.TiffFile(self.path)
        series = tif.series[0]
        store = series.aszarr(level=self.level, squeeze=False)
        array = zarr.open_array(store, mode="r")
        self._view = AxisMappedSource(array, index=self._index, order=self._order)
        self._finalizer = weakref.finalize(self, _close, store, tif)

    def read(self, region: Region) -> np.ndarray:
        with self._lock:
            if self._view is None:
                self._open()
            view = self._view
        assert view is not None
        try:
            return view.read(region)
        except EmsegError:
            raise
        except Exception as exc:
            raise FormatError(
                f"cannot read {region} from the TIFF file {self.path!r}: the file is corrupt "
                f"or truncated ({type(exc).__name__}: {exc})."
            ) from exc

    def close(self) -> None:
        """Close the file now (it reopens on the next read)."""
        with self._lock:
            self._finalizer()
            self._view = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_view", "_finalizer"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._view = None
        self._finalizer = weakref.finalize(self, _noop)


def _noop() -> None:
    pass


def _close(store: Any, tif: Any) -> None:
    try:
        store.close()
    finally:
        tif.close()


def _plan_axes(
    axes: str, shape: Sequence[int], *, t_index: int | None, path: str
) -> tuple[list[int | None], list[int], str]:
    """Map tifffile axes to emseg axes: ``(index, order, emseg_axes)``."""
    index: list[int | None] = [None] * len(axes)
    roles: dict[str, int] = {}
    for i, (a, n) in enumerate(zip(axes, shape, strict=True)):
        if a == "T":
            if t_index is not None:
                if not -n <= t_index < n:
                    raise EmsegValueError(
                        f"`dataset` 't={t_index}' is out of range: {path!r} has {n} time "
                        f"points (t=0..{n - 1})."
                    )
                index[i] = t_index % n
            elif n == 1:
                index[i] = 0
            else:
                raise FormatError(
                    f"{path!r} is a time series ({n} time points, axes {axes!r}); emseg reads "
                    f"one 2D/3D image at a time. Pick a time point with dataset='t=0' "
                    f"(CLI: --dataset t=0), or path '{path}' with dataset='t=K' for K < {n}."
                )
            continue
        role = (
            "y"
            if a == "Y"
            else "x"
            if a == "X"
            else "z"
            if a in _DEPTH
            else "c"
            if a in _CHANNEL
            else ""
        )
        if n == 1 and role in ("z", "c", ""):
            index[i] = 0
            continue
        if role == "":
            raise FormatError(
                f"{path!r} has an axis {a!r} of size {n} (axes {axes!r}) that emseg cannot map "
                "to z, y, x or channels; save the image as a plain z-y-x stack."
            )
        if role in roles:
            raise FormatError(
                f"{path!r} has two non-singleton axes that both map to {role!r} "
                f"(axes {axes!r}, shape {tuple(shape)}); save the image with one {role} axis."
            )
        roles[role] = i
    if "y" not in roles or "x" not in roles:
        raise FormatError(f"{path!r} has no Y and X axes (axes {axes!r}, shape {tuple(shape)}).")
    out_axes = "".join(a for a in "czyx" if a in roles)
    order = [roles[a] for a in out_axes]
    return index, order, out_axes


def _shaped_axes(tif: Any, series: Any) -> str | None:
    """Axes of a tifffile "shaped" series written without axes, by emseg's convention.

    tifffile labels such series heuristically (e.g. ``YXQ`` for a (2, 5, 1)
    array); emseg reads them as ``YX``, ``ZYX`` or ``CZYX``, plus ``S`` when
    the pages hold RGB samples.
    """
    if series.kind != "shaped" or not tif.shaped_metadata:
        return None
    if "axes" in tif.shaped_metadata[0]:
        return None
    shape = series.get_shape(False)
    samples = "S" if series.keyframe.axes.endswith("S") and len(shape) >= 3 else ""
    n = len(shape) - len(samples)
    if n < 2:
        return None
    core = {2: "YX", 3: "ZYX", 4: "CZYX"}.get(n, "Q" * (n - 2) + "YX")
    return core + samples


def _ome_pixels(tif: Any) -> Any:
    xml = tif.ome_metadata
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Pixels":
            return el
    return None


def _ome_spacing(pixels: Any, out_axes: str) -> tuple[float, ...] | None:
    values = []
    for a in out_axes:
        if a == "c":
            continue
        size = pixels.get(f"PhysicalSize{a.upper()}")
        unit = pixels.get(f"PhysicalSize{a.upper()}Unit", "µm")
        factor = unit_to_nm(unit)
        if size is None or factor is None:
            return None
        values.append(float(size) * factor)
    return tuple(values)


def _ome_channel_names(pixels: Any, n_channels: int) -> tuple[str, ...] | None:
    names = [
        el.get("Name") for el in pixels if el.tag.rsplit("}", 1)[-1] == "Channel" and el.get("Name")
    ]
    return tuple(names) if len(names) == n_channels and n_channels > 1 else None


def _resolution(page: Any) -> tuple[float, float] | None:
    """Pixels per unit (y, x) from the page's resolution tags, or None."""
    try:
        xr = page.tags["XResolution"].value
        yr = page.tags.get("YResolution", page.tags["XResolution"]).value
        x = xr[0] / xr[1]
        y = yr[0] / yr[1]
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    return (y, x) if x > 0 and y > 0 else None


def _imagej_spacing(tif: Any, out_axes: str) -> tuple[float, ...] | None:
    meta = tif.imagej_metadata or {}
    factor = unit_to_nm(meta.get("unit"))
    res = _resolution(tif.pages[0])
    if factor is None or res is None:
        return None
    yx = (factor / res[0], factor / res[1])
    if "z" in out_axes:
        return (float(meta.get("spacing", 1.0)) * factor, *yx)
    return yx


_RESUNIT_NM = {3: 1e7, 4: 1e6, 5: 1e3}  # TIFF ResolutionUnit: centimetre, millimetre, micrometre


def _tiff_tag_spacing(tif: Any, out_axes: str) -> tuple[float, ...] | None:
    if "z" in out_axes:
        return None
    page = tif.pages[0]
    factor = _RESUNIT_NM.get(int(getattr(page, "resolutionunit", 1) or 1))
    res = _resolution(page)
    if factor is None or res is None:
        return None
    return (factor / res[0], factor / res[1])


def _check_complete(tif: Any, series: Any, path: str) -> None:
    """Raise FormatError when the series' last page points past the end of the file."""
    size = os.path.getsize(path)
    pages = series.levels[-1].pages if len(series.levels) > 1 else series.pages
    for candidate in (series.pages[-1], pages[-1]):
        if candidate is None:
            raise FormatError(f"{path!r} is truncated or corrupt: its last page cannot be read.")
        offsets = getattr(candidate, "dataoffsets", ()) or ()
        counts = getattr(candidate, "databytecounts", ()) or ()
        end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=0)
        if end > size:
            raise FormatError(
                f"{path!r} is truncated: its image data ends at byte {end} but the file has "
                f"{size} bytes. Copy the file again from its source."
            )


def open_tiff(
    path: str, *, dataset: str | None = None, level: int = 0
) -> tuple[TiffSource, ImageInfo]:
    """Open the first series of a TIFF file lazily.

    Parameters
    ----------
    path : str
        A ``.tif`` / ``.tiff`` / ``.ome.tif`` / ``.btf`` file.
    dataset : str, optional
        ``"t=K"`` picks time point K of a time series; otherwise must be None.
    level : int
        Pyramid level of a multi-resolution OME-TIFF (0 = full resolution).

    Returns
    -------
    source : TiffSource
        Axes ``"yx"``, ``"zyx"``, ``"cyx"`` or ``"czyx"``, dtype as stored.
    info : ImageInfo
        Spacing in nm (z-y-x) when the file has it, else None.

    Raises
    ------
    FormatError
        When the file is not a readable TIFF, is truncated, or has axes that
        cannot be mapped (e.g. a time series without ``dataset="t=K"``).
    EmsegValueError
        When `level` or `dataset` is out of range.
    """
    import tifffile

    path = os.fspath(path)
    t_index: int | None = None
    if dataset is not None:
        m = _T_KEY.match(str(dataset))
        if m is None:
            raise EmsegValueError(
                f"`dataset` for a TIFF file can only pick a time point, as 't=K'; got {dataset!r}."
            )
        t_index = int(m.group(1))

    collector = _LogCollector()
    tlog = logging.getLogger("tifffile")
    tlog.addHandler(collector)
    tif = None
    try:
        try:
            tif = tifffile.TiffFile(path)
            if not tif.series:
                raise FormatError(f"{path!r} holds no image series.")
            series = tif.series[0]
            levels = len(series.levels)
            if level >= levels:
                raise EmsegValueError(
                    f"`level` must be below {levels} for {path!r} (it has {levels} pyramid "
                    f"level{'s' if levels > 1 else ''}); got {level}."
                )
            _check_complete(tif, series, path)
            if collector.messages:
                raise FormatError(f"{path!r} is truncated or corrupt: {collector.messages[0]}")
            lseries = series.levels[level]
            axes = _shaped_axes(tif, series) or lseries.get_axes(False)
            shape = lseries.get_shape(False)
            index, order, out_axes = _plan_axes(axes, shape, t_index=t_index, path=path)
            level_shapes = tuple(
                tuple(int(s.get_shape(False)[i]) for i in order) for s in series.levels
            )
            pixels = _ome_pixels(tif) if tif.is_ome else None
            spacing = None
            channel_names = None
            if pixels is not None:
                spacing = _ome_spacing(pixels, out_axes)
                if "c" in out_axes:
                    channel_names = _ome_channel_names(pixels, shape[order[0]])
            if spacing is None and tif.is_imagej:
                spacing = _imagej_spacing(tif, out_axes)
            if spacing is None:
                spacing = _tiff_tag_spacing(tif, out_axes)
            if spacing is not None and not all(np.isfinite(s) and s > 0 for s in spacing):
                spacing = None  # zeros / NaN mean "not set"
            if spacing is not None and level > 0:
                spatial = [i for i, a in enumerate(out_axes) if a != "c"]
                spacing = tuple(
                    s * level_shapes[0][i] / level_shapes[level][i]
                    for s, i in zip(spacing, spatial, strict=True)
                )
            source = TiffSource(path, level=level, index=index, order=order, tif=tif)
        except EmsegError:
            raise
        except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError, EOFError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise FormatError(
                f"{path!r} is not a readable TIFF file (corrupt or truncated): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    except BaseException:
        if tif is not None:
            tif.close()
        raise
    finally:
        tlog.removeHandler(collector)
    flavor = "ome" if tif.is_ome else "imagej" if tif.is_imagej else "plain"
    info = ImageInfo(
        axes=out_axes,
        spacing=spacing,
        channel_names=channel_names,
        levels=levels,
        level_shapes=level_shapes,
        format="tiff",
        attrs={"tiff_axes": axes, "tiff_flavor": flavor, "bigtiff": bool(tif.is_bigtiff)},
    )
    return source, info
