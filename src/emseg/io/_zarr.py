"""Reader for Zarr v2 / v3 arrays and groups, and OME-Zarr multiscales (NGFF 0.4 and 0.5).

``open_zarr(path, dataset=..., level=...)`` returns a :class:`Source` over one
zarr array and the :class:`ImageInfo` found in the metadata:

- OME-Zarr (``multiscales`` in the group attributes for NGFF <= 0.4 on Zarr
  v2, under ``ome`` for NGFF 0.5 on Zarr v3): the array of
  ``datasets[level]``; axes from the metadata (a singleton ``t`` is dropped,
  the channel axis is moved first); spacing from the ``scale`` transforms
  (dataset and multiscale level combined) converted to nm with the axis
  units; channel names from ``omero``.
- A plain array: axes by number of dimensions (``yx``, ``zyx``, ``czyx``);
  spacing from a ``spacing`` or ``resolution`` attribute (nm, z-y-x) when
  present, else unknown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError
from emseg.io._image import ArraySource, ImageInfo, Region, Source, unit_to_nm

logger = logging.getLogger(__name__)

_PLAIN_AXES = {2: "yx", 3: "zyx", 4: "czyx"}


def get_multiscales(attrs: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """Return the first multiscale of OME-Zarr group attributes and its NGFF version.

    ``None`` when the attributes hold no multiscales.
    """
    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        return dict(ome["multiscales"][0]), str(ome.get("version", "0.5"))
    ms = attrs.get("multiscales")
    if isinstance(ms, list) and ms:
        return dict(ms[0]), str(ms[0].get("version", "0.4"))
    return None


def _get_omero(attrs: dict[str, Any]) -> dict[str, Any] | None:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("omero"), dict):
        return dict(ome["omero"])
    omero = attrs.get("omero")
    return dict(omero) if isinstance(omero, dict) else None


def _scale_of(transforms: Sequence[dict[str, Any]] | None, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for t in transforms or ():
        if t.get("type") == "scale" and "scale" in t:
            values = [float(v) for v in t["scale"]]
            if len(values) != ndim:
                raise FormatError(
                    f"an OME-Zarr scale transform has {len(values)} entries for {ndim} axes."
                )
            scale = [a * b for a, b in zip(scale, values, strict=True)]
    return scale


class _AxisSource:
    """A Source over a zarr array whose stored axes are squeezed / reordered."""

    def __init__(self, array: Any, *, keep: Sequence[int], squeeze: Sequence[int]) -> None:
        self.array_ = array  # not `array`: LazyImage.to_dask would map the raw zarr array
        self._keep = list(keep)  # stored axis of each output axis, output order
        self._squeeze = set(squeeze)
        self.shape = tuple(int(array.shape[i]) for i in self._keep)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(int(array.chunks[i]) for i in self._keep)
        stored_kept = sorted(self._keep)
        self._perm = [stored_kept.index(i) for i in self._keep]

    def read(self, region: Region) -> np.ndarray:
        key: list[Any] = []
        for i in range(self.array_.ndim):
            key.append(0 if i in self._squeeze else region[self._keep.index(i)])
        data = np.asarray(self.array_[tuple(key)])
        return np.transpose(data, self._perm)


def _multiscale_axes(
    ms: dict[str, Any], ndim: int, shape: Sequence[int], where: str
) -> tuple[list[str], list[str | None], list[int], list[int]]:
    """Names and units of the stored axes, the stored axes to keep (output order), to squeeze."""
    raw = ms.get("axes")
    if raw is None:  # NGFF <= 0.2: always 5D tczyx
        raw = list("tczyx")[-ndim:]
    names: list[str] = []
    units: list[str | None] = []
    for a in raw:
        if isinstance(a, str):
            names.append(a.lower())
            units.append(None)
        else:
            names.append(str(a.get("name", "")).lower())
            units.append(a.get("unit"))
    if len(names) != ndim:
        raise FormatError(f"{where}: the metadata lists {len(names)} axes for a {ndim}D array.")
    squeeze: list[int] = []
    for i, n in enumerate(names):
        if n not in ("t", "c", "z", "y", "x"):
            raise FormatError(f"{where}: unsupported axis name {n!r} (emseg reads t, c, z, y, x).")
        if n == "t":
            if shape[i] != 1:
                raise EmsegValueError(
                    f"{where} has a time axis of length {shape[i]}; emseg reads one time point. "
                    "Write that time point to its own OME-Zarr first."
                )
            squeeze.append(i)
    keep = [names.index(a) for a in "czyx" if a in names]
    return names, units, keep, squeeze


def _plain(array: Any, where: str) -> tuple[Source, ImageInfo]:
    ndim = array.ndim
    if ndim not in _PLAIN_AXES:
        raise FormatError(
            f"{where} is a {ndim}D array; emseg reads 2D (y, x), 3D (z, y, x) or 4D (c, z, y, x) "
            "arrays, or OME-Zarr with axis metadata."
        )
    axes = _PLAIN_AXES[ndim]
    attrs = dict(array.attrs)
    n_spatial = sum(a in "zyx" for a in axes)
    spacing = None
    for key in ("spacing", "resolution"):
        value = attrs.get(key)
        if isinstance(value, list | tuple) and len(value) == n_spatial:
            spacing = tuple(float(v) for v in value)
            break
    emseg_attrs = attrs.get("emseg")
    if isinstance(emseg_attrs, dict) and emseg_attrs.get("spacing_known") is False:
        spacing = None
    return ArraySource(array), ImageInfo(
        axes=axes,
        spacing=spacing,
        levels=1,
        level_shapes=(tuple(int(s) for s in array.shape),),
        format="zarr",
        attrs=attrs,
    )


def _multiscale(group: Any, ms: dict[str, Any], level: int, where: str) -> tuple[Source, ImageInfo]:
    datasets = ms.get("datasets") or []
    if not datasets:
        raise FormatError(f"{where}: the OME-Zarr multiscales lists no datasets.")
    if level >= len(datasets):
        raise EmsegValueError(
            f"`level` must be below {len(datasets)} for {where} (levels 0-{len(datasets) - 1}); "
            f"got {level}."
        )
    arrays = []
    for d in datasets:
        try:
            arrays.append(group[d["path"]])
        except KeyError:
            raise FormatError(
                f"{where}: the multiscale dataset {d['path']!r} is listed but missing."
            ) from None
    array = arrays[level]
    names, units, keep, squeeze = _multiscale_axes(ms, array.ndim, array.shape, where)
    axes = "".join(names[i] for i in keep)
    scale = _scale_of(datasets[level].get("coordinateTransformations"), array.ndim)
    ms_scale = _scale_of(ms.get("coordinateTransformations"), array.ndim)
    scale = [a * b for a, b in zip(scale, ms_scale, strict=True)]
    spatial = [i for i in keep if names[i] in "zyx"]
    spacing: tuple[float, ...] | None = None
    factors = [unit_to_nm(units[i]) for i in spatial]
    if all(f is not None for f in factors):
        spacing = tuple(scale[i] * f for i, f in zip(spatial, factors, strict=True))  # type: ignore[operator]
    elif all(units[i] is None for i in spatial) and any(scale[i] != 1.0 for i in spatial):
        logger.debug("%s: axes without units; reading the scale as nanometres", where)
        spacing = tuple(scale[i] for i in spatial)
    attrs = dict(group.attrs)
    emseg_attrs = attrs.get("emseg")
    if isinstance(emseg_attrs, dict) and emseg_attrs.get("spacing_known") is False:
        spacing = None
    channel_names = None
    omero = _get_omero(attrs)
    if omero and "c" in axes:
        labels = [str(ch.get("label", f"channel {i}")) for i, ch in enumerate(omero["channels"])]
        if len(labels) == array.shape[names.index("c")]:
            channel_names = tuple(labels)
    level_shapes = tuple(tuple(int(a.shape[i]) for i in keep) for a in arrays)
    if not squeeze and keep == sorted(keep):
        source: Source = ArraySource(array)
    else:
        source = _AxisSource(array, keep=keep, squeeze=squeeze)
    return source, ImageInfo(
        axes=axes,
        spacing=spacing,
        channel_names=channel_names,
        levels=len(datasets),
        level_shapes=level_shapes,
        format="ome-zarr",
        attrs=attrs,
    )


def _members(group: Any) -> list[str]:
    return sorted([*group.array_keys(), *(f"{k}/" for k in group.group_keys())])


def open_zarr(
    path: str | os.PathLike[str], *, dataset: str | None = None, level: int = 0
) -> tuple[Source, ImageInfo]:
    """Open a Zarr array, group or OME-Zarr multiscale (Zarr v2 or v3) lazily.

    Parameters
    ----------
    path : str or path
        The ``.zarr`` folder (a group or an array).
    dataset : str, optional
        Path of an array or OME-Zarr group inside the group at `path`
        (e.g. ``"raw"`` or ``"labels/cells"``). Required when the group
        holds several arrays and no multiscales.
    level : int, default 0
        Pyramid level of an OME-Zarr multiscale (0 = full resolution).

    Returns
    -------
    source : Source
        The array of the chosen level, channels first.
    info : ImageInfo
        Axes, spacing (nm, z-y-x, or ``None`` when unknown), channel names,
        number of levels and the group's (or array's) attributes.

    Raises
    ------
    DatasetNotFoundError
        When `dataset` is not in the group, or the group holds several arrays
        and no `dataset` is given (the message lists them).
    FormatError
        When the folder is not readable Zarr or its OME metadata is broken.
    EmsegValueError
        When `level` does not exist.
    """
    import zarr

    where = os.fspath(path) if dataset is None else f"{os.fspath(path)}:{dataset}"
    try:
        node: Any = zarr.open(store=os.fspath(path), mode="r")
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no Zarr array or group at {os.fspath(path)!r}.") from None
    except Exception as exc:
        raise FormatError(f"{os.fspath(path)!r} is not a readable Zarr container: {exc}") from exc
    if dataset is not None and dataset.strip("/"):
        if not isinstance(node, zarr.Group):
            raise DatasetNotFoundError(
                f"{os.fspath(path)!r} is a single Zarr array; it has no dataset {dataset!r}. "
                "Leave `dataset` (CLI: --dataset) out."
            )
        try:
            node = node[dataset.strip("/")]
        except KeyError:
            raise DatasetNotFoundError(
                f"no dataset {dataset!r} in {os.fspath(path)!r}; it holds: "
                f"{', '.join(_members(node)) or '(nothing)'}."
            ) from None
    if isinstance(node, zarr.Array):
        return _plain(node, where)
    found = get_multiscales(dict(node.attrs))
    if found is not None:
        return _multiscale(node, found[0], level, where)
    arrays = sorted(node.array_keys())
    if len(arrays) == 1:
        return _plain(node[arrays[0]], f"{where}/{arrays[0]}")
    members = _members(node)
    raise DatasetNotFoundError(
        f"the Zarr group {where!r} has no OME-Zarr multiscales and "
        + (f"holds several datasets: {', '.join(members)}" if members else "holds no arrays")
        + "; pass dataset=NAME (CLI: --dataset NAME)."
    )
