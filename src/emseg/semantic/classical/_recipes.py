"""Named classical recipes, blockwise where the operation is local, in memory where global.

=============  ========================================  ==========================
recipe         what                                      how it runs
=============  ========================================  ==========================
normalize      robust percentiles per section -> [0, 1]   blockwise, one section/block
clahe          CLAHE per section -> [0, 1]                blockwise, one section/block
local          local (adaptive) threshold, window in nm  blockwise with halo
otsu, li       global threshold                          in memory (size-checked)
superpixels    SLIC with spacing                         in memory (size-checked)
nucleus        Karabağ-style nucleus recipe              in memory (size-checked)
=============  ========================================  ==========================

Global recipes refuse images above `max_voxels` with an error that suggests a
downsampled pyramid level (``open_image(path, level=2)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from emseg._checks import check_choice
from emseg.blockwise import SchedulerLike, as_input, check_inputs, input_spacing, map_blocks
from emseg.errors import EmsegValueError
from emseg.semantic.classical._intensity import clahe, normalize_percentiles
from emseg.semantic.classical._nucleus import segment_nucleus
from emseg.semantic.classical._superpixels import superpixels
from emseg.semantic.classical._threshold import local_window_halo, threshold

RECIPES: dict[str, str] = {
    "normalize": "robust percentile normalisation per section (float32 in [0, 1])",
    "clahe": "CLAHE per section (float32 in [0, 1])",
    "local": "local adaptive threshold, window in nm (uint8 mask)",
    "otsu": "global Otsu threshold (uint8 mask)",
    "li": "global Li threshold (uint8 mask)",
    "superpixels": "SLIC superpixels with spacing (uint32 labels)",
    "nucleus": "learning-free nucleus with its envelope, Karabag et al. 2019 (uint8 mask)",
}

#: Largest image (voxels) a global recipe loads into memory by default.
MAX_VOXELS = 2**28


def check_fits_memory(shape: tuple[int, ...], max_voxels: int, recipe: str) -> None:
    """Refuse a global recipe on an image above `max_voxels`, suggesting a pyramid level."""
    n = int(np.prod(shape))
    if n > max_voxels:
        raise EmsegValueError(
            f"recipe {recipe!r} works on the whole image in memory, which has {n} voxels "
            f"(shape {shape}) > `max_voxels`={max_voxels}. Run it on a downsampled pyramid level "
            "(open_image(path, level=2); CLI: --level 2), crop the image, or raise max_voxels."
        )


def _normalize_block(data: np.ndarray, *, low: float, high: float) -> np.ndarray:
    return normalize_percentiles(data, low=low, high=high, per_section=True)


def _clahe_block(
    data: np.ndarray, *, spacing: list[float], kernel_size: float | None, clip_limit: float
) -> np.ndarray:
    return clahe(data, spacing=spacing, kernel_size=kernel_size, clip_limit=clip_limit)


def _local_block(data: np.ndarray, **kw: Any) -> np.ndarray:
    return threshold(data, method="local", **kw).astype(np.uint8)


def run_recipe(
    recipe: str,
    image: Any,
    *,
    out: Any = None,
    spacing: Any = None,
    params: dict[str, Any] | None = None,
    max_voxels: int = MAX_VOXELS,
    block_shape: Any = None,
    chunks: Any = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Run a named recipe (see the module table) on an image of any size.

    Parameters
    ----------
    recipe : str
        One of :data:`RECIPES`.
    image : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        Grey levels.
    out : str, path or None
        ``.ome.zarr`` output; None returns an in-memory result.
    spacing : sequence of float, optional
        Voxel size in nm; the image's own by default.
    params : dict, optional
        Keyword options of the recipe's function: ``low``/``high``
        (normalize); ``kernel_size``/``clip_limit`` (clahe); ``window``
        (nm)/``offset``/``polarity`` (local); ``polarity`` (otsu, li);
        ``size``/``compactness`` (superpixels); those of
        :func:`segment_nucleus` (nucleus).
    max_voxels : int
        Size limit of the in-memory recipes.
    block_shape, chunks, n_workers, scheduler, resume, overwrite, progress
        For the blockwise recipes, as :func:`emseg.blockwise.map_blocks`.

    Returns
    -------
    zarr.Array (blockwise recipes) or LazyImage / ndarray (in-memory recipes)
        The output dtype is given in :data:`RECIPES`.
    """
    check_choice(recipe, tuple(RECIPES), name="recipe")
    img = as_input(image)
    shape = check_inputs([img], ["image"])
    sp = input_spacing(img, spacing, len(shape))
    kw = dict(params or {})
    section = (1, *shape[1:]) if len(shape) == 3 else shape
    blockwise: dict[str, Any] = {
        "block_shape": block_shape, "chunks": chunks, "n_workers": n_workers,
        "scheduler": scheduler, "resume": resume, "overwrite": overwrite, "progress": progress,
        "spacing": sp, "out": out,
    }  # fmt: skip
    if recipe in ("normalize", "clahe"):
        if blockwise["block_shape"] is None:
            blockwise["block_shape"] = section
        if chunks is None:
            blockwise["chunks"] = (
                (1, *(min(256, s) for s in shape[1:])) if len(shape) == 3 else None
            )
        func: Callable[..., np.ndarray]
        kwargs: dict[str, Any]
        if recipe == "normalize":
            func, kwargs = (
                _normalize_block,
                {"low": kw.get("low", 1.0), "high": kw.get("high", 99.0)},
            )
        else:
            func, kwargs = _clahe_block, {
                "spacing": list(sp), "kernel_size": kw.get("kernel_size"),
                "clip_limit": kw.get("clip_limit", 0.01),
            }  # fmt: skip
        if len(shape) == 3 and blockwise["block_shape"][1:] != tuple(shape[1:]):
            raise EmsegValueError(
                f"recipe {recipe!r} normalises whole sections: `block_shape` must be "
                f"(n, {shape[1]}, {shape[2]}); got {blockwise['block_shape']}."
            )
        return map_blocks(func, img, dtype=np.float32, kwargs=kwargs, **blockwise)
    if recipe == "local":
        window = kw.get("window")
        if window is None:
            raise EmsegValueError("recipe 'local' needs params['window'] in nm (CLI: --window).")
        kwargs = {
            "window": float(window), "offset": float(kw.get("offset", 0.0)),
            "polarity": kw.get("polarity", "bright"), "spacing": list(sp), "per_section": True,
        }  # fmt: skip
        halo = local_window_halo(float(window), sp, True)
        return map_blocks(
            _local_block, img, dtype=np.uint8, halo=halo, labels=True, kwargs=kwargs, **blockwise
        )
    check_fits_memory(shape, max_voxels, recipe)
    data = np.asarray(img[...])
    if recipe in ("otsu", "li"):
        method: Literal["otsu", "li"] = "otsu" if recipe == "otsu" else "li"
        result: np.ndarray = threshold(
            data, method=method, polarity=kw.get("polarity", "bright")
        ).astype(np.uint8)
    elif recipe == "superpixels":
        result = superpixels(data, spacing=sp, **kw)
    else:
        result = segment_nucleus(data, spacing=sp, **kw).mask.astype(np.uint8)
    if out is None:
        return result
    from emseg.io import write_image

    return write_image(result, out, spacing=sp, labels=True, overwrite=overwrite)
