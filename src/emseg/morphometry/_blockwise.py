"""``measure``: the morphometry of every object of a label volume of any size.

Two passes. (1) One streaming reduction (:func:`emseg.blockwise.reduce_blocks`)
sums, per label, counts, coordinate moments, bounding boxes, intensity sums
and 256/1024-bin histograms, and (label, class) counts: exact across blocks, so
objects crossing blocks are measured whole. (2) For the measures that need
the object's shape (mesh surface area, convex-hull solidity, Feret diameter,
surface points), each object's bounding-box crop is read back from the label
volume (a small read from disk for chunked inputs). An object whose box holds
more than `max_object_voxels` voxels is measured on a strided view of its box
(every k-th voxel per axis, the spacing multiplied by k) and its row records
``geometry_step = k``; memory of pass 2 is bounded by `max_object_voxels`.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from emseg._checks import SpacingLike, check_label_dtype, check_same_shape, parse_spacing
from emseg.errors import EmsegValueError
from emseg.morphometry._regions import RegionSums, region_sums
from emseg.morphometry._shape import convex_voxels, feret_max
from emseg.morphometry._surface import object_surface, subsample_points
from emseg.morphometry._table import build_table

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Morphometry:
    """The result of :func:`measure`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per object (see ``docs/morphometry.md`` for the columns).
    points : dict of int to (P, D) ndarray of float32
        Up to `n_points` surface points per object in nm (global frame), for
        surface-to-surface proximity in the catalog. Empty when
        ``geometry=False``.
    """

    table: pd.DataFrame
    points: dict[int, np.ndarray] = field(default_factory=dict)


def _sums_block(
    *arrays: np.ndarray, block: Any, has_image: bool, has_classes: bool, edges: np.ndarray | None
) -> RegionSums:
    labels = arrays[0]
    image = arrays[1] if has_image else None
    classes = arrays[1 + has_image] if has_classes else None
    return region_sums(labels, image, classes, origin=block.read_roi.begin, edges=edges)


def _merge(a: RegionSums, b: RegionSums) -> RegionSums:
    return a.merge(b)


def _minmax_block(a: np.ndarray) -> tuple[float, float]:
    return (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (math.inf, -math.inf)


def _hist_edges(
    image: Any,
    *,
    intensity_range: tuple[float, float] | None,
    block_shape: Any,
    n_workers: int,
    scheduler: Any,
) -> np.ndarray:
    dt = np.dtype(image.dtype)
    if dt == np.uint8 and intensity_range is None:
        return np.arange(257, dtype=np.float64)
    if intensity_range is None:
        from emseg.blockwise import reduce_blocks

        lo, hi = (
            reduce_blocks(
                _minmax_block,
                image,
                merge=lambda a, b: (min(a[0], b[0]), max(a[1], b[1])),
                empty=(0.0, 1.0),
                block_shape=block_shape,
                n_workers=n_workers,
                scheduler=scheduler,
                progress=False,
            )
            if block_shape is not None
            else _minmax_block(np.asarray(image))
        )
        intensity_range = (lo, hi if hi > lo else lo + 1)
    lo, hi = map(float, intensity_range)
    if not hi > lo:
        raise EmsegValueError(
            f"`intensity_range` must be (low, high) with low < high; got {intensity_range}."
        )
    return np.linspace(lo, hi * (1 + 1e-12) + 1e-12, 1025)


def measure(
    labels: Any,
    *,
    image: Any = None,
    classes: Any = None,
    class_names: tuple[str, ...] | None = None,
    spacing: SpacingLike = None,
    geometry: bool = True,
    n_points: int = 256,
    max_object_voxels: int = 2**24,
    intensity_range: tuple[float, float] | None = None,
    block_shape: int | tuple[int, ...] | None = None,
    n_workers: int = 2,
    scheduler: Any = None,
    progress: bool = False,
) -> Morphometry:
    """Measure every object (label > 0) of a label volume in physical units.

    Parameters
    ----------
    labels : (Z, Y, X) or (Y, X) array of uint
        Instance labels (numpy, zarr, :class:`~emseg.io.LazyImage`...).
    image : array, same shape, optional
        Raw intensities for the intensity statistics. For uint8 the
        percentiles are exact (256 unit bins); otherwise they come from 1024
        bins over `intensity_range` (default: the image's min..max, one extra
        pass) and are within one bin width.
    classes : array of int, same shape, optional
        Semantic class map; each object gets its majority class.
    class_names : tuple of str, optional
        Names of the class values (default: the value as text).
    spacing : float or sequence of float, optional
        Voxel size in nm (default: ``labels.spacing`` if present, else 1).
    geometry : bool
        Compute surface area, Feret diameter, solidity, sphericity and surface
        points (pass 2). Off: only the reduction's columns.
    n_points : int
        Surface points kept per object for the catalog.
    max_object_voxels : int
        Objects with larger bounding boxes are measured on a strided view.
    intensity_range : (float, float), optional
        Histogram range for non-uint8 images.
    block_shape : int or tuple of int, optional
        Block shape of the reduction; ``None`` with a numpy array measures it
        in one piece, otherwise the chunks decide.
    n_workers, scheduler, progress
        As for :func:`emseg.blockwise.reduce_blocks`.

    Returns
    -------
    Morphometry
        ``table`` (float64 measures, uint64 labels) and ``points``.

    Raises
    ------
    EmsegValueError
        When `image` or `classes` differ in shape from `labels`, or `labels`
        is not 2D / 3D.
    EmsegTypeError
        When `labels` is not an integer array.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((4, 8, 8), np.uint32); lab[1:3, 2:6, 2:6] = 7
    >>> m = measure(lab, spacing=(40, 4, 4))
    >>> float(m.table.loc[0, "volume_nm3"])
    20480.0
    """
    check_label_dtype(labels)
    if labels.ndim not in (2, 3):
        raise EmsegValueError(f"`labels` must be 2D or 3D; got shape {tuple(labels.shape)}.")
    if image is not None:
        check_same_shape(labels, image, names=("labels", "image"))
    if classes is not None:
        check_same_shape(labels, classes, names=("labels", "classes"))
        check_label_dtype(classes, name="classes")
    if spacing is None:
        spacing = getattr(labels, "spacing", None)
    sp = parse_spacing(spacing, labels.ndim)
    shape = tuple(int(s) for s in labels.shape)
    in_memory = block_shape is None and isinstance(labels, np.ndarray)
    edges = None
    if image is not None:
        edges = _hist_edges(
            image,
            intensity_range=intensity_range,
            block_shape=None if in_memory else (block_shape or 64),
            n_workers=n_workers,
            scheduler=scheduler,
        )
    if in_memory:
        sums = region_sums(
            labels,
            None if image is None else np.asarray(image),
            None if classes is None else np.asarray(classes),
            edges=edges,
        )
    else:
        from emseg.blockwise import reduce_blocks

        inputs = [labels] + [a for a in (image, classes) if a is not None]
        sums = reduce_blocks(
            _sums_block,
            inputs,
            merge=_merge,
            empty=RegionSums.empty(labels.ndim, edges),
            block_shape=block_shape,
            pass_block=True,
            n_workers=n_workers,
            scheduler=scheduler,
            progress=progress,
            kwargs={
                "has_image": image is not None,
                "has_classes": classes is not None,
                "edges": edges,
            },
        )
    extra: dict[str, np.ndarray] = {}
    points: dict[int, np.ndarray] = {}
    if geometry and len(sums.labels):
        extra, points = _geometry(labels, sums, sp, n_points, max_object_voxels, n_workers)
    table = build_table(sums, spacing=sp, shape=shape, geometry=extra, class_names=class_names)
    log.info("measured %d objects", len(table))
    return Morphometry(table=table, points=points)


def _one_object(
    labels: Any,
    lab: int,
    bmin: np.ndarray,
    bmax: np.ndarray,
    sp: tuple[float, ...],
    n_points: int,
    max_vox: int,
) -> tuple[Any, ...]:
    size = int(np.prod(bmax - bmin))
    step = 1
    if size > max_vox:
        step = math.ceil((size / max_vox) ** (1 / len(sp)))
    sl = tuple(slice(int(a), int(b), step) for a, b in zip(bmin, bmax, strict=True))
    mask = np.asarray(labels[sl]) == lab
    spacing = tuple(s * step for s in sp)
    origin_nm = np.asarray(bmin, np.float64) * np.asarray(sp)
    surf = object_surface(mask, spacing=spacing, origin=(0,) * len(sp))
    verts = surf.vertices + origin_nm
    hull_vox = convex_voxels(mask)
    solidity = float(mask.sum()) / hull_vox if hull_vox else math.nan
    fer = feret_max(verts)
    pts = subsample_points(verts, n_points, seed=lab % (2**32)).astype(np.float32)
    return surf.area, fer, solidity, step, pts


def _geometry(
    labels: Any,
    sums: RegionSums,
    sp: tuple[float, ...],
    n_points: int,
    max_vox: int,
    n_workers: int,
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    n = len(sums.labels)
    labs = sums.labels.tolist()

    def work(i: int) -> tuple[Any, ...]:
        return _one_object(
            labels, labs[i], sums.bbox_min[i], sums.bbox_max[i], sp, n_points, max_vox
        )

    if n_workers > 1 and n > 8:
        with ThreadPoolExecutor(n_workers) as pool:
            results = list(pool.map(work, range(n)))
    else:
        results = [work(i) for i in range(n)]
    area = np.array([r[0] for r in results], np.float64)
    key = "surface_area_nm2" if len(sp) == 3 else "perimeter_nm"
    cols = {
        key: area,
        "feret_max_nm": np.array([r[1] for r in results], np.float64),
        "solidity": np.array([r[2] for r in results], np.float64),
        "geometry_step": np.array([r[3] for r in results], np.int64),
    }
    points = {lab: r[4] for lab, r in zip(labs, results, strict=True)}
    return cols, points
