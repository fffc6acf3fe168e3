"""Lazy reader for MRC files (cryo-ET / EM tomograms and image stacks).

The header is parsed and validated with mrcfile (``permissive=False``); the
data is then memory-mapped with numpy, so a slice reads only the pages of the
file it touches. A single section (``nz == 1``) is ``"yx"``, anything else
``"zyx"``.

Spacing comes from the header's voxel size (``cella / mx, my, mz``, in Å),
divided by 10 to give nm and reordered x-y-z -> z-y-x. A voxel size of 0 on
any spatial axis means unknown (spacing None).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError
from emseg.io._image import ImageInfo, Region


class MRCSource:
    """A lazy source over the data block of an MRC file (a read-only memory map)."""

    def __init__(self, path: str, *, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.offset = offset
        self.shape = shape
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self._stored_dtype = np.dtype(dtype)
        self.chunks = (1,) * (len(shape) - 2) + tuple(shape[-2:])
        self._lock = threading.Lock()
        self._map: np.memmap | None = None

    def _array(self) -> np.memmap:
        with self._lock:
            if self._map is None:
                # np.memmap closes the file descriptor right away; the map itself
                # is released when this object is garbage-collected.
                self._map = np.memmap(
                    self.path,
                    dtype=self._stored_dtype,
                    mode="r",
                    offset=self.offset,
                    shape=self.shape,
                )
            return self._map

    def read(self, region: Region) -> np.ndarray:
        data = np.array(self._array()[region])
        return data.astype(self.dtype, copy=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state.pop("_map", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._map = None


def open_mrc(
    path: str, *, dataset: str | None = None, level: int = 0
) -> tuple[MRCSource, ImageInfo]:
    """Open an MRC file lazily.

    Parameters
    ----------
    path : str
        A ``.mrc`` / ``.rec`` / ``.st`` / ``.ali`` / ``.map`` / ``.mrcs`` file.
    dataset, level
        Must be None and 0 (an MRC file holds one array).

    Returns
    -------
    source : MRCSource
        Axes ``"zyx"`` (or ``"yx"`` for one section); dtype from the MRC mode
        (int8, int16, uint16, float16, float32, complex64), native byte order.
    info : ImageInfo
        Spacing in nm (z-y-x) from the header voxel size, or None when it is 0.

    Raises
    ------
    FormatError
        When the header is invalid (``permissive=False``) or the file is shorter
        than its header says.
    """
    import mrcfile
    from mrcfile.utils import data_dtype_from_header, data_shape_from_header

    path = os.fspath(path)
    if dataset is not None:
        raise EmsegValueError(f"`dataset` must be None for an MRC file; got {dataset!r}.")
    if level != 0:
        raise EmsegValueError(f"`level` must be 0 for an MRC file (it has one level); got {level}.")
    try:
        with mrcfile.open(path, mode="r", permissive=False, header_only=True) as mrc:
            header = mrc.header
            dtype = data_dtype_from_header(header)
            shape = tuple(int(s) for s in data_shape_from_header(header))
            offset = int(header.nbytes) + int(header.nsymbt)
            vs = mrc.voxel_size
            voxel_xyz = (float(vs.x), float(vs.y), float(vs.z))
            attrs: dict[str, Any] = {
                "mrc_mode": int(header.mode),
                "mrc_ispg": int(header.ispg),
                "mrc_exttyp": bytes(header.exttyp).decode("ascii", "replace").strip("\x00 "),
            }
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no such file: {path!r}.") from None
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{path!r} is not a valid MRC file: {exc}") from exc
    # drop singleton leading axes (a single section is stored as 1 x Y x X)
    while len(shape) > 2 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) not in (2, 3):
        raise FormatError(
            f"{path!r} holds an MRC array of shape {shape}; emseg reads 2D and 3D MRC files "
            "(volume stacks, mode 0/1/2/4/6/12)."
        )
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    size = os.path.getsize(path)
    if size < needed:
        raise FormatError(
            f"{path!r} is truncated: its header describes {needed} bytes but the file has "
            f"{size}. Copy the file again from its source."
        )
    axes = "zyx" if len(shape) == 3 else "yx"
    spacing: tuple[float, ...] | None
    if all(v > 0 for v in voxel_xyz[: len(shape)]):
        zyx = (voxel_xyz[2] / 10.0, voxel_xyz[1] / 10.0, voxel_xyz[0] / 10.0)
        spacing = zyx if axes == "zyx" else zyx[1:]
    else:
        spacing = None
    source = MRCSource(path, offset=offset, shape=shape, dtype=dtype)
    info = ImageInfo(
        axes=axes, spacing=spacing, levels=1, level_shapes=(shape,), format="mrc", attrs=attrs
    )
    return source, info
