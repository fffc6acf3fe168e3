"""A small, lazy N5 reader (zarr 3 has no N5 support).

Layout read here (N5 spec 2.x / 4.x):

* the container is a folder whose ``attributes.json`` holds ``"n5"``;
* a dataset is a folder whose ``attributes.json`` holds ``dimensions`` and
  ``blockSize`` (both x-y-z, reversed against emseg's z-y-x), ``dataType`` and
  ``compression`` (``{"type": "raw" | "gzip" | "bzip2" | "xz" | "blosc" | "zstd"
  | "lz4", ...}``, or the old ``compressionType``);
* block ``(i, j, k)`` (x-y-z grid indices) is the file ``<dataset>/i/j/k``: a
  big-endian header (uint16 mode, uint16 ndim, ndim uint32 block size x-y-z,
  uint32 element count when mode is 1) then the compressed big-endian data,
  whose C order is emseg's z-y-x C order. Missing blocks read as 0 (or the
  dataset's ``fillValue`` attribute).

Multiscale groups hold datasets ``s0``, ``s1``, ...; ``level`` picks one.
Spacing (converted to nm, z-y-x) comes from the first of:

1. the level dataset's own ``pixelResolution`` (``{"dimensions": [x, y, z],
   "unit": "nm"}`` or a plain x-y-z list) or ``resolution`` (x-y-z);
2. the group's ``pixelResolution`` / ``resolution`` (the resolution of s0),
   multiplied by the level's ``downsamplingFactors`` (x-y-z, on the level
   dataset) or the group's ``scales[level]`` (x-y-z), else by the ratio of the
   shapes;
3. a COSEM-style ``transform`` (``{"axes": [...], "scale": [...], "units": [...]}``).

A plain list without unit is in the ``unit`` attribute's unit, nm when absent
(the Paintera / CREMI convention).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError
from emseg.io._image import ImageInfo, Region, unit_to_nm

_DTYPES = {
    name: np.dtype(name).newbyteorder(">")
    for name in (
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float32",
        "float64",
    )
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot parse N5 attributes {str(path)!r}: {exc}") from exc
    if not isinstance(value, dict):
        raise FormatError(f"N5 attributes {str(path)!r} must hold a JSON object.")
    return value


def _decompressor(compression: dict[str, Any], where: str) -> Any:
    """Return ``decode(bytes, nbytes) -> bytes`` for an N5 compression description."""
    import numcodecs

    kind = str(compression.get("type", "raw")).lower()
    if kind == "raw":
        return lambda data, nbytes: data
    if kind == "gzip":
        gz, zl = numcodecs.GZip(), numcodecs.Zlib()
        # N5 writes gzip streams by default, or zlib streams with "useZlib": true
        return lambda data, nbytes: gz.decode(data) if data[:2] == b"\x1f\x8b" else zl.decode(data)
    if kind == "bzip2":
        codec = numcodecs.BZ2()
        return lambda data, nbytes: codec.decode(data)
    if kind == "xz":
        codec = numcodecs.LZMA()
        return lambda data, nbytes: codec.decode(data)
    if kind == "blosc":
        codec = numcodecs.Blosc()
        return lambda data, nbytes: codec.decode(data)
    if kind == "zstd":
        codec = numcodecs.Zstd()
        return lambda data, nbytes: codec.decode(data)
    if kind == "lz4":
        return _decode_lz4_blocks
    raise FormatError(
        f"N5 dataset {where!r} uses compression {kind!r}; emseg reads raw, gzip, bzip2, xz, "
        "blosc, zstd and lz4."
    )


def _decode_lz4_blocks(data: bytes, nbytes: int) -> bytes:
    """Decode the lz4-java ``LZ4BlockOutputStream`` framing that N5 uses for lz4."""
    import numcodecs

    codec = numcodecs.LZ4()
    out = bytearray()
    pos = 0
    while pos < len(data):
        if data[pos : pos + 8] != b"LZ4Block":
            raise FormatError("bad lz4 block magic in an N5 block")
        token = data[pos + 8]
        clen, dlen, _checksum = struct.unpack_from("<iii", data, pos + 9)
        pos += 21
        chunk = data[pos : pos + clen]
        pos += clen
        if dlen == 0:
            break
        method = token & 0xF0
        if method == 0x10:  # stored without compression
            out += chunk
        else:
            out += codec.decode(struct.pack("<I", dlen) + chunk)
    return bytes(out)


def _read_block_file(path: str) -> bytes | None:
    """The raw bytes of one block file, or None when it does not exist (fill value)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class N5Source:
    """A lazy source over one N5 dataset: each read opens only the blocks it touches."""

    def __init__(self, path: str, attrs: dict[str, Any]) -> None:
        self.path = path
        try:
            dims = [int(d) for d in attrs["dimensions"]]
            block = [int(b) for b in attrs["blockSize"]]
            dtype_name = str(attrs["dataType"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(
                f"N5 dataset {path!r} has incomplete attributes (needs dimensions, blockSize, "
                f"dataType): {exc}"
            ) from exc
        if dtype_name not in _DTYPES:
            raise FormatError(
                f"N5 dataset {path!r} has dataType {dtype_name!r}; emseg reads "
                f"{', '.join(_DTYPES)}."
            )
        if len(block) != len(dims):
            raise FormatError(
                f"N5 dataset {path!r}: blockSize {block} and dimensions {dims} differ in length."
            )
        compression = attrs.get("compression")
        if compression is None:
            compression = {"type": attrs.get("compressionType", "raw")}
        self._decode = _decompressor(dict(compression), path)
        self._stored_dtype = _DTYPES[dtype_name]
        self.dtype = np.dtype(dtype_name)
        self.shape = tuple(reversed(dims))
        self.chunks = tuple(
            max(1, min(b, max(s, 1))) for b, s in zip(reversed(block), self.shape, strict=True)
        )
        self.fill_value = attrs.get("fillValue", 0) or 0

    def _block(self, grid: Sequence[int]) -> np.ndarray | None:
        """Block at z-y-x grid index `grid`, or None when missing."""
        file = os.path.join(self.path, *(str(g) for g in reversed(grid)))
        raw = _read_block_file(file)
        if raw is None:
            return None
        try:
            mode, ndim = struct.unpack_from(">HH", raw, 0)
            size_xyz = struct.unpack_from(f">{ndim}I", raw, 4)
            pos = 4 + 4 * ndim
            if mode == 1:
                pos += 4
            elif mode != 0:
                raise FormatError(
                    f"N5 block {file!r} has mode {mode} (object block); emseg reads array "
                    "blocks (mode 0 or 1)."
                )
            if ndim != len(self.shape):
                raise FormatError(
                    f"N5 block {file!r} has {ndim} dimensions but the dataset has {len(self.shape)}."
                )
            bshape = tuple(reversed(size_xyz))
            nbytes = int(np.prod(bshape)) * self._stored_dtype.itemsize
            data = self._decode(raw[pos:], nbytes)
            arr = np.frombuffer(data, dtype=self._stored_dtype, count=int(np.prod(bshape)))
        except FormatError:
            raise
        except Exception as exc:
            raise FormatError(
                f"N5 block {file!r} is corrupt or truncated ({type(exc).__name__}: {exc})."
            ) from exc
        return arr.reshape(bshape)

    def read(self, region: Region) -> np.ndarray:
        out_shape = tuple(r.stop - r.start for r in region)
        out = np.full(out_shape, self.fill_value, dtype=self.dtype)
        if any(s == 0 for s in out_shape):
            return out
        ranges = [
            range(r.start // c, (r.stop - 1) // c + 1)
            for r, c in zip(region, self.chunks, strict=True)
        ]
        for grid in np.ndindex(*(len(r) for r in ranges)):
            gidx = tuple(rng[g] for rng, g in zip(ranges, grid, strict=True))
            block = self._block(gidx)
            if block is None:
                continue
            src: list[slice] = []
            dst: list[slice] = []
            for gi, c, r, bs in zip(gidx, self.chunks, region, block.shape, strict=True):
                b0 = gi * c
                lo = max(r.start, b0)
                hi = min(r.stop, b0 + bs)
                if hi <= lo:
                    break
                src.append(slice(lo - b0, hi - b0))
                dst.append(slice(lo - r.start, hi - r.start))
            else:
                out[tuple(dst)] = block[tuple(src)]
        return out


def _is_dataset(attrs: dict[str, Any]) -> bool:
    return "dimensions" in attrs and "dataType" in attrs


def _scale_levels(folder: Path) -> list[Path]:
    """The ``s0, s1, ...`` datasets of a multiscale group, in order (empty if none)."""
    levels = []
    i = 0
    while _is_dataset(_read_json(folder / f"s{i}" / "attributes.json")):
        levels.append(folder / f"s{i}")
        i += 1
    return levels


def _find_images(root: Path) -> dict[str, str]:
    """Datasets and multiscale groups under `root`: ``{relative path: description}``."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if "attributes.json" not in filenames:
            continue
        attrs = _read_json(here / "attributes.json")
        rel = here.relative_to(root).as_posix()
        if _is_dataset(attrs):
            found[rel] = f"{tuple(reversed(attrs['dimensions']))} {attrs['dataType']}"
            dirnames[:] = []  # block folders
            continue
        levels = _scale_levels(here)
        if levels and rel != ".":
            s0 = _read_json(levels[0] / "attributes.json")
            found[rel] = (
                f"multiscale, {len(levels)} levels, s0 {tuple(reversed(s0['dimensions']))} "
                f"{s0['dataType']}"
            )
            dirnames[:] = []
    return found


def _xyz_to_zyx_nm(values: Any, unit: Any, ndim_spatial: int) -> tuple[float, ...] | None:
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    factor = unit_to_nm(unit) if unit is not None else 1.0
    if factor is None or len(vals) < ndim_spatial:
        return None
    return tuple(v * factor for v in reversed(vals[:ndim_spatial]))


def _resolution_of(attrs: dict[str, Any], n: int) -> tuple[float, ...] | None:
    pr = attrs.get("pixelResolution")
    if isinstance(pr, dict):
        return _xyz_to_zyx_nm(pr.get("dimensions"), pr.get("unit", attrs.get("unit")), n)
    if isinstance(pr, list):
        return _xyz_to_zyx_nm(pr, attrs.get("unit"), n)
    if isinstance(attrs.get("resolution"), list):
        return _xyz_to_zyx_nm(attrs["resolution"], attrs.get("unit"), n)
    return None


def _transform_spacing(attrs: dict[str, Any], n: int) -> tuple[float, ...] | None:
    tr = attrs.get("transform")
    if not isinstance(tr, dict):
        return None
    try:
        axes = [str(a).lower() for a in tr["axes"]]
        scale = [float(s) for s in tr["scale"]]
        units = tr.get("units", ["nm"] * len(axes))
        out = []
        for a in "zyx"[3 - n :]:
            i = axes.index(a)
            factor = unit_to_nm(units[i])
            if factor is None:
                return None
            out.append(scale[i] * factor)
    except (KeyError, ValueError, TypeError, IndexError):
        return None
    return tuple(out)


def open_n5(path: str, *, dataset: str | None = None, level: int = 0) -> tuple[N5Source, ImageInfo]:
    """Open an N5 dataset (or one level of a multiscale group) lazily.

    Parameters
    ----------
    path : str
        The N5 container, or a dataset / multiscale group folder inside it.
    dataset : str, optional
        The dataset or multiscale group inside `path` (e.g. ``"volumes/raw"``).
        Needed when the container holds several.
    level : int
        Level ``s<level>`` of a multiscale group (0 = full resolution).

    Returns
    -------
    source : N5Source
        Axes ``"yx"``, ``"zyx"`` or ``"czyx"``; dtype from ``dataType``.
    info : ImageInfo
        Spacing in nm (z-y-x) from the attributes described in the module
        docstring, or None.

    Raises
    ------
    DatasetNotFoundError
        When `dataset` does not exist (the message lists what does).
    EmsegValueError
        When no dataset is given and the container holds several, or `level`
        is out of range.
    FormatError
        When attributes or blocks are malformed.
    """
    root = Path(os.fspath(path))
    if not root.is_dir():
        raise DatasetNotFoundError(f"no such N5 container folder: {str(root)!r}.")
    if dataset is not None:
        target = root / check_dataset_name(dataset).strip("/")
        if not (target / "attributes.json").exists():
            raise DatasetNotFoundError(
                f"dataset {dataset!r} is not in the N5 container {str(root)!r}; it holds: "
                f"{_describe(_find_images(root))}."
            )
    else:
        attrs = _read_json(root / "attributes.json")
        if _is_dataset(attrs) or _scale_levels(root):
            target = root
        else:
            found = _find_images(root)
            if len(found) != 1:
                what = "no datasets" if not found else f"{len(found)} datasets"
                raise EmsegValueError(
                    f"the N5 container {str(root)!r} holds {what}: {_describe(found)}. "
                    f"Pass dataset='<name>' (CLI: --dataset <name>)."
                )
            target = root / next(iter(found))
    tattrs = _read_json(target / "attributes.json")
    if _is_dataset(tattrs):
        levels = [target]
        group_attrs: dict[str, Any] = {}
    else:
        levels = _scale_levels(target)
        group_attrs = tattrs
        if not levels:
            raise DatasetNotFoundError(
                f"{str(target)!r} is an N5 group without datasets; it holds: "
                f"{_describe(_find_images(target))}."
            )
    if level >= len(levels):
        raise EmsegValueError(
            f"`level` must be below {len(levels)} for {str(target)!r} "
            f"(levels s0..s{len(levels) - 1}); got {level}."
        )
    level_attrs = [_read_json(p / "attributes.json") for p in levels]
    source = N5Source(str(levels[level]), level_attrs[level])
    ndim = len(source.shape)
    if not 2 <= ndim <= 4:
        raise FormatError(
            f"N5 dataset {str(levels[level])!r} has {ndim} axes (shape {source.shape}); emseg "
            "reads 2D (y, x), 3D (z, y, x) or 4D (c, z, y, x) arrays."
        )
    axes = ("yx", "zyx", "czyx")[ndim - 2]
    n = min(ndim, 3)
    shapes = tuple(tuple(reversed([int(d) for d in a["dimensions"]])) for a in level_attrs)
    spacing = _level_spacing(level_attrs, group_attrs, shapes, level, n)
    if spacing is not None and not all(np.isfinite(s) and s > 0 for s in spacing):
        spacing = None  # zeros / NaN mean "not set"
    attrs = {k: v for k, v in level_attrs[level].items() if k not in ("dimensions", "blockSize")}
    info = ImageInfo(
        axes=axes,
        spacing=spacing,
        levels=len(levels),
        level_shapes=shapes,
        format="n5",
        attrs=attrs,
    )
    return source, info


def _level_spacing(
    level_attrs: list[dict[str, Any]],
    group_attrs: dict[str, Any],
    shapes: tuple[tuple[int, ...], ...],
    level: int,
    n: int,
) -> tuple[float, ...] | None:
    own = _resolution_of(level_attrs[level], n) or _transform_spacing(level_attrs[level], n)
    if own is not None:
        return own
    base = _resolution_of(group_attrs, n) or _transform_spacing(group_attrs, n)
    if base is None and level > 0:
        base = _resolution_of(level_attrs[0], n)
    if base is None:
        return None
    factors: Any = level_attrs[level].get("downsamplingFactors")
    scales = group_attrs.get("scales")
    if factors is None and isinstance(scales, list) and level < len(scales):
        factors = scales[level]
    if factors is not None:
        try:
            f = [float(v) for v in reversed(list(factors)[:n])]
            return tuple(b * x for b, x in zip(base, f, strict=True))
        except (TypeError, ValueError):
            pass
    ratio = [shapes[0][-n:][i] / shapes[level][-n:][i] for i in range(n)]
    return tuple(b * r for b, r in zip(base, ratio, strict=True))


def _describe(found: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in found.items()) or "(nothing)"


def check_dataset_name(name: str) -> str:
    """Raise when an N5 dataset name tries to leave the container."""
    if ".." in Path(name).parts:
        raise EmsegValueError(f"`dataset` must be a path inside the container; got {name!r}.")
    return name
