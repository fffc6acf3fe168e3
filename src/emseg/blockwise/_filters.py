"""Gaussian and median filters in physical units, blockwise, exactly as in memory.

Both run :func:`~emseg.blockwise.map_blocks` with the halo the filter needs
(Gaussian: scipy's kernel radius ``int(truncate * sigma + 0.5)`` voxels per
axis; median: ``size // 2``) and scipy's ``mode="reflect"``, so the result is
identical to ``scipy.ndimage.gaussian_filter`` / ``median_filter`` of the
whole volume (bit for bit, up to the float32 rounding the in-memory call
also does), for any block shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from emseg._checks import check_choice
from emseg.blockwise._execute import SchedulerLike
from emseg.blockwise._geometry import Block
from emseg.blockwise._map import _normalize_inputs, map_blocks
from emseg.blockwise._output import input_spacing, resolve_chunks
from emseg.errors import EmsegValueError

Unit = Literal["nm", "voxel"]


def _to_voxels(
    value: float | Sequence[float], spacing: tuple[float, ...], unit: str, name: str
) -> tuple[float, ...]:
    check_choice(unit, ("nm", "voxel"), name="unit")
    ndim = len(spacing)
    if isinstance(value, int | float | np.integer | np.floating):
        values = (float(value),) * ndim
    else:
        values = tuple(float(v) for v in value)
    if len(values) != ndim:
        raise EmsegValueError(
            f"`{name}` must be one number or {ndim} numbers (z-y-x); got {tuple(values)}."
        )
    if any(not np.isfinite(v) or v < 0 for v in values):
        raise EmsegValueError(f"`{name}` must be finite and >= 0; got {values}.")
    if unit == "voxel":
        return values
    return tuple(v / s for v, s in zip(values, spacing, strict=True))


def gaussian_block(
    data: np.ndarray, *, sigma: Sequence[float], truncate: float, block: Block | None = None
) -> np.ndarray:
    """The block function of :func:`gaussian_filter` (float32 math and output).

    Equal to ``scipy.ndimage.gaussian_filter(data.astype(np.float32), sigma,
    truncate=truncate, mode="reflect", output=np.float32)`` bit for bit, but
    computed by GIL-free kernels (threads run in parallel) and, with `block`,
    only over its write region (each axis is cropped right after its pass).
    """
    # imported here: numba (and LLVM on the first call) only for jobs that filter
    from emseg.blockwise._gaussian import gaussian_crop

    crop = block.write_in_read if block is not None else None
    return gaussian_crop(data, sigma=sigma, truncate=truncate, crop=crop)


def median_block(data: np.ndarray, *, size: Sequence[int]) -> np.ndarray:
    """The block function of :func:`median_filter` (output dtype = input dtype)."""
    return ndimage.median_filter(data, size=tuple(size), mode="reflect")


#: Voxels per block of the filters' default blocks (128 x 256 x 256 from 64**3 chunks).
FILTER_BLOCK_VOXELS = 2**23


def filter_block_shape(
    shape: Sequence[int],
    chunks: Sequence[int],
    halo: Sequence[int],
    *,
    target_voxels: int = FILTER_BLOCK_VOXELS,
) -> tuple[int, ...]:
    """The default block of a filter job: whole chunks, grown where the halo costs most.

    Starting from `chunks`, doubles the axis with the largest halo-to-block
    ratio (ties: the last axis, contiguous in memory) until the block holds
    `target_voxels` or covers the volume. A block reads its write region plus
    the halo; with 64**3 chunks and a halo of 8 this gives 128 x 256 x 256
    blocks, which read 2.3 input chunks per written chunk instead of 3.4 for
    128**3 blocks and measured the least CPU per voxel of the shapes tried
    (see ``docs/blockwise.md``, *Performance notes*).

    Examples
    --------
    >>> filter_block_shape((512, 512, 512), (64, 64, 64), (8, 8, 8))
    (128, 256, 256)
    >>> filter_block_shape((40, 2048, 2048), (8, 256, 256), (1, 8, 8))
    (32, 512, 512)
    """
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(c) for c in chunks)
    cap = [-(-s // c) * c for s, c in zip(shape, chunks, strict=True)]  # whole chunks
    block = [max(1, min(c, m)) for c, m in zip(chunks, cap, strict=True)]
    while math.prod(block) < target_voxels:
        growable = [i for i in range(len(block)) if block[i] < cap[i]]
        if not growable:
            break
        i = max(growable, key=lambda a: (halo[a] / block[a], a))
        block[i] = min(block[i] * 2, cap[i])
    return tuple(block)


def gaussian_halo(sigma_voxels: Sequence[float], truncate: float) -> tuple[int, ...]:
    """scipy's Gaussian kernel radius per axis: ``int(truncate * sigma + 0.5)``."""
    return tuple(int(truncate * float(s) + 0.5) for s in sigma_voxels)


def gaussian_filter(
    image: Any,
    *,
    sigma: float | Sequence[float],
    spacing: Any = None,
    unit: Unit = "nm",
    truncate: float = 4.0,
    out: Any = None,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    roi: Any = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Gaussian smoothing of a volume of any size, blockwise, in physical units.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        The input; read block by block.
    sigma : float or sequence of float
        Standard deviation per axis (z-y-x), in nm by default (see `unit`),
        so one value smooths an anisotropic stack isotropically in space.
    spacing : sequence of float, optional
        Voxel size in nm; the image's own (LazyImage) or 1.0 by default.
    unit : {"nm", "voxel"}, default "nm"
        Unit of `sigma`.
    truncate : float, default 4.0
        Kernel radius in sigmas (as scipy). The halo is the kernel radius.
    out, chunks, roi, n_workers, scheduler, resume, overwrite, progress
        As for :func:`map_blocks`.
    block_shape : int or tuple of int, optional
        Default :func:`filter_block_shape` (about 2**23 voxels, grown where
        the halo costs most: 128 x 256 x 256 for 64**3 chunks and a halo of
        8).

    Returns
    -------
    zarr.Array of float32, same shape as `image`
        Equal to ``scipy.ndimage.gaussian_filter(image.astype(np.float32),
        sigma_voxels, truncate=truncate)`` for any block shape.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((20, 20), np.uint8); img[10, 10] = 100
    >>> out = gaussian_filter(img, sigma=8.0, spacing=(4.0, 4.0), block_shape=8,
    ...                       chunks=(8, 8), progress=False)
    >>> round(float(out[:].sum()), 3)
    100.0
    """
    arrays, _ = _normalize_inputs(image)
    img = arrays[0]
    ndim = len(img.shape)
    sp = input_spacing(img, spacing, ndim)
    sigma_vox = _to_voxels(sigma, sp, unit, "sigma")
    halo = gaussian_halo(sigma_vox, truncate)
    if block_shape is None:
        block_shape = filter_block_shape(img.shape, resolve_chunks(out, chunks, img.shape), halo)
    return map_blocks(
        gaussian_block,
        img,
        out=out,
        halo=halo,
        dtype=np.float32,
        block_shape=block_shape,
        chunks=chunks,
        roi=roi,
        spacing=sp,
        n_workers=n_workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        pass_block=True,
        params={"job": "gaussian_filter", "spacing": list(sp)},
        kwargs={"sigma": list(sigma_vox), "truncate": float(truncate)},
    )


def median_filter(
    image: Any,
    *,
    size: float | Sequence[float],
    spacing: Any = None,
    unit: Unit = "nm",
    out: Any = None,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    roi: Any = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Median filter over a box of `size`, blockwise, in physical units.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        The input.
    size : float or sequence of float
        Edge length of the box per axis, in nm by default; converted to
        voxels as ``max(1, round(size / spacing))`` (use odd voxel sizes for
        a centred box).
    spacing, unit, out, block_shape, chunks, roi, n_workers, scheduler, resume, overwrite, progress
        As for :func:`gaussian_filter`.

    Returns
    -------
    zarr.Array, same shape and dtype as `image`
        Equal to ``scipy.ndimage.median_filter(image, size_voxels)``.
    """
    arrays, _ = _normalize_inputs(image)
    img = arrays[0]
    ndim = len(img.shape)
    sp = input_spacing(img, spacing, ndim)
    size_vox = tuple(max(1, round(v)) for v in _to_voxels(size, sp, unit, "size"))
    halo = tuple(s // 2 for s in size_vox)
    if block_shape is None:
        block_shape = filter_block_shape(img.shape, resolve_chunks(out, chunks, img.shape), halo)
    return map_blocks(
        median_block,
        img,
        out=out,
        halo=halo,
        dtype=img.dtype,
        block_shape=block_shape,
        chunks=chunks,
        roi=roi,
        spacing=sp,
        n_workers=n_workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        params={"job": "median_filter", "spacing": list(sp)},
        kwargs={"size": list(size_vox)},
    )
