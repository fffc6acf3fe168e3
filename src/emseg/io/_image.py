"""The lazy image every reader returns, and the helpers readers share.

A reader turns a file into a :class:`Source` (an object with ``shape``,
``dtype``, ``chunks`` and ``read(region)``) plus the metadata it found.
:func:`emseg.io.open_image` wraps that into a :class:`LazyImage`, which adds
numpy-style slicing, conversion to Dask and the geometry (``spacing`` in nm,
z-y-x; ``axes``; ``channel_names``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from emseg.errors import EmsegTypeError, EmsegValueError

if TYPE_CHECKING:
    import dask.array as da

Region = tuple[slice, ...]
"""A box inside an array: one ``slice(start, stop)`` (step 1, bounds resolved) per axis."""

#: Axis letters emseg uses, in the order they are stored (channels first).
AXIS_ORDER = "czyx"


@runtime_checkable
class Source(Protocol):
    """What a reader provides: a chunked array that can read a box on request."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]

    def read(self, region: Region) -> np.ndarray:
        """Return the voxels of `region` (resolved slices, step 1) as a numpy array."""
        ...


@dataclass(frozen=True)
class ImageInfo:
    """Metadata a reader found in a file (``None`` where the file says nothing)."""

    axes: str
    spacing: tuple[float, ...] | None = None
    unit: str = "nanometer"
    channel_names: tuple[str, ...] | None = None
    levels: int = 1
    level_shapes: tuple[tuple[int, ...], ...] = ()
    format: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


class ArraySource:
    """A :class:`Source` over anything numpy-sliceable (numpy, zarr, h5py, memmap).

    Slicing the wrapped object must read only the requested box (zarr, h5py
    and memory maps do), so the image stays lazy.
    """

    def __init__(self, array: Any, *, chunks: Sequence[int] | None = None) -> None:
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        if chunks is None:
            chunks = getattr(array, "chunks", None) or self.shape
        self.chunks = tuple(
            max(1, min(int(c), max(s, 1))) for c, s in zip(chunks, self.shape, strict=True)
        )

    def read(self, region: Region) -> np.ndarray:
        return np.asarray(self.array[region])


def _normalize_key(key: Any, shape: tuple[int, ...]) -> tuple[Region, tuple[Any, ...]]:
    """Split a numpy basic-indexing key into a box to read and a key to apply after.

    Returns ``(region, post)`` where ``region`` has one step-1 slice per axis
    and ``post`` indexes the array read from ``region`` (steps, integers).
    """
    if not isinstance(key, tuple):
        key = (key,)
    n_ellipsis = sum(k is Ellipsis for k in key)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ellipsis == 1:
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for an image with {len(shape)} axes: {key!r}")
    key = key + (slice(None),) * (len(shape) - len(key))
    region: list[slice] = []
    post: list[Any] = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step > 0:
                count = len(range(start, stop, step))
                hi = start + (count - 1) * step + 1 if count else start
                region.append(slice(start, hi))
                post.append(slice(None, None, step))
            else:
                # negative step: read the covered box, then step through it backwards
                count = len(range(start, stop, step))
                if count == 0:
                    region.append(slice(0, 0))
                    post.append(slice(None))
                else:
                    lo = start + (count - 1) * step
                    region.append(slice(lo, start + 1))
                    post.append(slice(None, None, step))
        elif isinstance(k, int | np.integer):
            i = int(k)
            if i < -n or i >= n:
                raise IndexError(f"index {i} is out of bounds for an axis of size {n}")
            i %= n
            region.append(slice(i, i + 1))
            post.append(0)
        else:
            raise EmsegTypeError(
                "a lazy image supports basic indexing only (integers, slices, '...'); "
                f"got {type(k).__name__}. Read a box first (image[z0:z1]) and index that array."
            )
    return tuple(region), tuple(post)


class LazyImage:
    """An image on disk, read only where it is sliced.

    Behaves like a read-only numpy array for basic indexing and carries the
    geometry of the data. Axes are channels first when present: ``"zyx"``,
    ``"yx"``, ``"czyx"`` or ``"cyx"``. ``spacing`` holds one value per
    *spatial* axis in nm, z-y-x order.

    Attributes
    ----------
    shape, dtype, chunks, ndim
        As for a numpy / zarr array.
    spacing : tuple of float
        Voxel size in nm, one entry per spatial axis.
    axes : str
        Axis letters, e.g. ``"zyx"``.
    unit : str
        Always ``"nanometer"``: readers convert the file's unit.
    channel_names : tuple of str or None
        Names of the channels when the image has a ``c`` axis.
    source : str
        The path (and dataset) the image was opened from.
    format : str
        The reader that opened it (``"tiff"``, ``"zarr"``, ...).
    level, levels : int
        The pyramid level opened and the number of levels in the file.
    spacing_known : bool
        Whether the spacing came from the file or from the caller (not a default).
    attrs : dict
        Other metadata found in the file (e.g. provenance).
    """

    def __init__(
        self,
        source: Source,
        *,
        spacing: Sequence[float],
        axes: str,
        unit: str = "nanometer",
        channel_names: Sequence[str] | None = None,
        path: str = "",
        format: str = "",
        level: int = 0,
        levels: int = 1,
        spacing_known: bool = True,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        if len(axes) != len(source.shape):
            raise EmsegValueError(
                f"`axes` {axes!r} has {len(axes)} letters but the data has {len(source.shape)} "
                f"axes (shape {source.shape})."
            )
        n_spatial = sum(a in "zyx" for a in axes)
        if len(spacing) != n_spatial:
            raise EmsegValueError(
                f"`spacing` must have {n_spatial} entries (one per spatial axis of {axes!r}); "
                f"got {tuple(spacing)}."
            )
        self._source = source
        self.spacing: tuple[float, ...] = tuple(float(s) for s in spacing)
        self.axes = axes
        self.unit = unit
        self.channel_names = tuple(channel_names) if channel_names is not None else None
        self.source = path
        self.format = format
        self.level = level
        self.levels = levels
        self.spacing_known = spacing_known
        self.attrs = dict(attrs or {})

    # -- array protocol -------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._source.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._source.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self._source.chunks)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The shape without the channel axis."""
        return tuple(s for s, a in zip(self.shape, self.axes, strict=True) if a in "zyx")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        region, post = _normalize_key(key, self.shape)
        if any(r.stop <= r.start for r in region):
            out_shape = tuple(r.stop - r.start for r in region)
            return np.empty(out_shape, dtype=self.dtype)[post]
        data = self._source.read(region)
        if data.dtype != self.dtype:
            data = data.astype(self.dtype, copy=False)
        return data[post]

    def read(self) -> np.ndarray:
        """Load the whole image into memory."""
        return self[...]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self.read()
        return data if dtype is None else data.astype(dtype, copy=False)

    def to_dask(self, chunks: Any = None) -> da.Array:
        """Return a Dask array over the file; nothing is read until it is computed.

        Zarr-backed images map directly onto the zarr array; other formats
        read one region per Dask chunk through this object.
        """
        import dask.array as da

        chunks = chunks if chunks is not None else self.chunks
        inner = getattr(self._source, "array", None)
        if inner is not None and type(inner).__module__.startswith("zarr"):
            return da.from_zarr(inner, chunks=chunks)
        meta = np.empty((0,) * self.ndim, dtype=self.dtype)
        return da.from_array(self, chunks=chunks, meta=meta, asarray=False, lock=False)

    def iter_chunks(self) -> Any:
        """Yield the regions (tuples of slices) of the file's chunk grid, C order."""
        ranges = [range(0, s, c) for s, c in zip(self.shape, self.chunks, strict=True)]
        for starts in itertools.product(*ranges):
            yield tuple(
                slice(s, min(s + c, n))
                for s, c, n in zip(starts, self.chunks, self.shape, strict=True)
            )

    def __repr__(self) -> str:
        return (
            f"LazyImage(shape={self.shape}, dtype={self.dtype}, axes={self.axes!r}, "
            f"spacing={self.spacing}, chunks={self.chunks}, format={self.format!r}, "
            f"source={self.source!r})"
        )


#: Factor from a unit name (as found in OME, ImageJ, NGFF, HDF5 attributes) to nanometres.
_UNIT_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "nanometers": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "micrometers": 1e3,
    "\\u00b5m": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "a": 0.1,
    "å": 0.1,
    "angstrom": 0.1,
    "ångström": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
}


def unit_to_nm(unit: str | None) -> float | None:
    """Return the factor that converts a length in `unit` to nm, or None if unknown."""
    if unit is None:
        return None
    return _UNIT_TO_NM.get(str(unit).strip().lower())
