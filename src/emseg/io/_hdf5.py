"""Lazy reader for HDF5 datasets (via h5py).

The dataset is named in the path (``file.h5:/volumes/raw``) or by
``dataset=``. Without one, a file with exactly one image dataset (2 or more
dimensions) opens that one; otherwise the error lists what is there.

Axes are ``yx``, ``zyx`` or ``czyx`` (channels first) by number of
dimensions, unless the dataset has an ilastik/vigra ``axistags`` attribute,
which gives the stored order (e.g. ``zyxc``) and is transposed to emseg's.

Spacing is read from the dataset's attributes, first match wins:

* ``element_size_um`` — Fiji / ilastik, z-y-x in µm;
* ``resolution`` — CREMI convention, z-y-x in nm;
* ``spacing`` or ``voxel_size`` — z-y-x, in the unit of the ``unit``
  attribute (nm when absent).

A single number applies to every axis; a value with one extra leading entry
(a channel) drops it. Zero, negative or NaN entries mean unknown (None).
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from emseg.errors import DatasetNotFoundError, EmsegError, EmsegValueError, FormatError
from emseg.io._image import ImageInfo, Region, unit_to_nm

#: Target size of one chunk when the dataset is stored contiguously (bytes).
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024


def default_chunks(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Chunks for an unchunked array: whole trailing planes, split by rows if too large.

    Returns ``(1, ..., 1, rows, X)`` with ``rows * X * itemsize`` at most
    :data:`DEFAULT_CHUNK_BYTES` (at least one row), matching the C-order
    layout so each chunk is one contiguous read.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return ()
    row = max(1, shape[-1] * itemsize)
    if len(shape) == 1:
        return (max(1, shape[0]),)
    rows = max(1, min(shape[-2], DEFAULT_CHUNK_BYTES // row))
    return (1,) * (len(shape) - 2) + (max(rows, 1), max(shape[-1], 1))


class HDF5Source:
    """A lazy source over one HDF5 dataset; the file is opened on first read."""

    def __init__(self, path: str, dataset: str, *, order: Sequence[int] | None = None) -> None:
        import h5py

        self.path = path
        self.dataset = dataset
        with h5py.File(path, "r") as f:
            ds = f[dataset]
            stored_shape = tuple(int(s) for s in ds.shape)
            stored_chunks = ds.chunks or default_chunks(stored_shape, ds.dtype.itemsize)
            self.dtype = np.dtype(ds.dtype)
        self._order = tuple(order) if order is not None else tuple(range(len(stored_shape)))
        self.shape = tuple(stored_shape[i] for i in self._order)
        self.chunks = tuple(
            max(1, min(int(stored_chunks[i]), max(stored_shape[i], 1))) for i in self._order
        )
        self._lock = threading.Lock()
        self._file: Any = None
        self._finalizer: Any = None

    def _ds(self) -> Any:
        import h5py

        with self._lock:
            if self._file is None:
                self._file = h5py.File(self.path, "r")
                self._finalizer = weakref.finalize(self, self._file.close)
            return self._file[self.dataset]

    def read(self, region: Region) -> np.ndarray:
        ds = self._ds()
        stored = [slice(None)] * len(self._order)
        for out_pos, i in enumerate(self._order):
            stored[i] = region[out_pos]
        try:
            data = ds[tuple(stored)]
        except EmsegError:
            raise
        except Exception as exc:
            raise FormatError(
                f"cannot read {region} from {self.path}:{self.dataset} (corrupt file?): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        data = np.asarray(data)
        return data if self._order == tuple(range(data.ndim)) else data.transpose(self._order)

    def close(self) -> None:
        """Close the file now (it reopens on the next read)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._file = None
            self._finalizer = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_file", "_finalizer"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._file = None
        self._finalizer = None


def list_datasets(f: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """All datasets of an open h5py file: ``{"/name": (shape, dtype)}``."""
    import h5py

    found: dict[str, tuple[tuple[int, ...], str]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found["/" + name] = (tuple(int(s) for s in obj.shape), str(obj.dtype))

    f.visititems(visit)
    return found


def _listing(found: dict[str, tuple[tuple[int, ...], str]]) -> str:
    return ", ".join(f"{k} {shape} {dt}" for k, (shape, dt) in found.items()) or "(no datasets)"


def _attr_value(attrs: Any, name: str) -> Any:
    value = attrs.get(name)
    if isinstance(value, bytes):
        value = value.decode()
    return value


def _spacing_from_attrs(attrs: Any, n_spatial: int) -> tuple[float, ...] | None:
    candidates: list[tuple[str, float | None]] = [
        ("element_size_um", 1e3),
        ("resolution", 1.0),
    ]
    unit = _attr_value(attrs, "unit")
    factor = unit_to_nm(unit) if unit is not None else 1.0
    candidates += [("spacing", factor), ("voxel_size", factor)]
    for name, scale in candidates:
        if name not in attrs or scale is None:
            continue
        try:
            values = np.atleast_1d(np.asarray(attrs[name], dtype=float)).tolist()
        except (TypeError, ValueError):
            continue
        if len(values) == 1:
            values = values * n_spatial
        if len(values) == n_spatial + 1 and n_spatial >= 1:
            values = values[1:]  # a leading channel entry
        if len(values) == n_spatial:
            out = tuple(v * scale for v in values)
            # zeros / NaN mean "not set" in several writers: treat as unknown
            return out if all(np.isfinite(v) and v > 0 for v in out) else None
    return None


def _axistags_order(attrs: Any, ndim: int) -> tuple[str, list[int]] | None:
    raw = _attr_value(attrs, "axistags")
    if raw is None:
        return None
    try:
        keys = [a["key"].lower() for a in json.loads(raw)["axes"]]
    except (ValueError, KeyError, TypeError):
        return None
    if len(keys) != ndim or len(set(keys)) != ndim or not set(keys) <= set("czyx"):
        return None
    out_axes = "".join(a for a in "czyx" if a in keys)
    return out_axes, [keys.index(a) for a in out_axes]


def open_hdf5(
    path: str, *, dataset: str | None = None, level: int = 0
) -> tuple[HDF5Source, ImageInfo]:
    """Open one dataset of an HDF5 file lazily.

    Parameters
    ----------
    path : str
        The HDF5 file.
    dataset : str, optional
        Path of the dataset inside the file (e.g. ``"/volumes/raw"``).
    level : int
        Must be 0 (HDF5 datasets have one level).

    Returns
    -------
    source : HDF5Source
        Axes ``"yx"``, ``"zyx"`` or ``"czyx"``, dtype as stored.
    info : ImageInfo
        Spacing in nm (z-y-x) from the attributes listed in the module
        docstring, or None.

    Raises
    ------
    DatasetNotFoundError
        When `dataset` is not in the file (the message lists what is).
    EmsegValueError
        When no dataset is given and the file holds several, or `level` > 0.
    FormatError
        When the file is not HDF5 or the dataset has fewer than 2 or more than 4 axes.
    """
    import h5py

    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no such file: {path!r}.") from None
    except OSError as exc:
        raise FormatError(f"{path!r} is not a readable HDF5 file: {exc}") from exc
    with f:
        found = list_datasets(f)
        if dataset is None:
            images = {k: v for k, v in found.items() if len(v[0]) >= 2}
            if len(images) != 1:
                what = "no image dataset" if not images else f"{len(images)} datasets"
                raise EmsegValueError(
                    f"{path!r} holds {what}: {_listing(found)}. Name one in the path "
                    f"('{path}:/name') or pass dataset='/name'."
                )
            dataset = next(iter(images))
        name = "/" + dataset.strip("/")
        obj = f.get(name)
        if not isinstance(obj, h5py.Dataset):
            kind = "a group, not a dataset," if obj is not None else "not found"
            raise DatasetNotFoundError(
                f"dataset {dataset!r} is {kind} in {path!r}; the file holds: {_listing(found)}."
            )
        if level != 0:
            raise EmsegValueError(
                f"`level` must be 0 for an HDF5 dataset (it has one level); got {level}."
            )
        ndim = obj.ndim
        if not 2 <= ndim <= 4:
            raise FormatError(
                f"dataset {name!r} in {path!r} has {ndim} axes (shape {obj.shape}); emseg reads "
                "2D (y, x), 3D (z, y, x) or 4D (c, z, y, x) arrays."
            )
        tagged = _axistags_order(obj.attrs, ndim)
        if tagged is not None:
            axes, order = tagged
        else:
            axes, order = ("yx", "zyx", "czyx")[ndim - 2], list(range(ndim))
        n_spatial = sum(a in "zyx" for a in axes)
        spacing = _spacing_from_attrs(obj.attrs, n_spatial)
        attrs = {
            k: (v.tolist() if isinstance(v, np.ndarray | np.generic) else v)
            for k, v in obj.attrs.items()
            if isinstance(v, str | int | float | np.ndarray | np.generic)
        }
    source = HDF5Source(path, name, order=order)
    info = ImageInfo(
        axes=axes,
        spacing=spacing,
        levels=1,
        level_shapes=(source.shape,),
        format="hdf5",
        attrs=attrs,
    )
    return source, info
