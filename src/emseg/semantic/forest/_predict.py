"""Forest prediction of a volume of any size, blockwise, into OME-Zarr."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from emseg._checks import check_choice
from emseg.blockwise import SchedulerLike, as_input, check_inputs, input_spacing
from emseg.features import check_image, compute_features
from emseg.features._blockwise import (
    _spatial_chunks,
    prepare_channel_output,
    prepare_class_map_output,
    run_channel_blocks,
)
from emseg.semantic.forest._model import PixelClassifier, chain_probabilities, class_map

OutputDtype = Literal["float32", "uint8"]


def _predict_block(
    data: np.ndarray,
    *,
    model: PixelClassifier,
    spacing: tuple[float, ...],
    dtype: str,
    with_classes: bool,
) -> list[np.ndarray]:
    base = compute_features(check_image(data), spacing=spacing, spec=model.spec)
    probs = chain_probabilities(
        base,
        model.stages,
        context_scales=model.context_scales,
        spacing=spacing,
        spec=model.spec,
    )
    results = [quantize(probs) if dtype == "uint8" else probs]
    if with_classes:
        results.append(class_map(probs))
    return results


def quantize(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 ``round(255 * p)`` (``p = q / 255`` back)."""
    return np.rint(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)


def predict_blockwise(
    model: PixelClassifier,
    image: Any,
    *,
    out: Any = None,
    class_map_out: Any = None,
    spacing: Any = None,
    rescale: bool = False,
    dtype: OutputDtype = "float32",
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: SchedulerLike = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Per-class probabilities of a volume of any size, block by block, into OME-Zarr.

    Each block's features and autocontext stages are computed on its read
    region (the write region grown by :meth:`PixelClassifier.halo`), so the
    result equals :meth:`PixelClassifier.predict_proba` of the whole image.

    Parameters
    ----------
    model : PixelClassifier
        A trained (or loaded) model.
    image : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
        Grey levels, read block by block.
    out : str, path or None
        ``.ome.zarr`` output (axes ``czyx`` / ``cyx``, channel names = class
        names), or None (in memory).
    class_map_out : str, path or None
        Also write the class map (``argmax + 1``, uint8 label image) there.
    spacing : sequence of float, optional
        Voxel size in nm; the image's own by default.
    rescale : bool, default False
        Accept a spacing other than the model's (see
        :meth:`PixelClassifier.check_spacing`).
    dtype : {"float32", "uint8"}, default "float32"
        float32 probabilities in [0, 1], or uint8 ``round(255 * p)``.
    block_shape, chunks, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks` (`chunks` spatial).

    Returns
    -------
    zarr.Array, shape (C, Z, Y, X) or (C, Y, X), dtype `dtype`
        Probability of class c + 1 in channel c.
    """
    check_choice(dtype, ("float32", "uint8"), name="dtype")
    img = as_input(image)
    shape = check_inputs([img], ["image"])
    sp = model.check_spacing(input_spacing(img, spacing, len(shape)), len(shape), rescale=rescale)
    spatial_chunks = _spatial_chunks(chunks, shape)
    params = {
        "job": "emseg.forest.predict",
        "spacing": list(sp),
        "shape": list(shape),
        "dtype": dtype,
        "classes": list(model.class_names),
        "model": model.provenance.get("trained", ""),
        "class_map": class_map_out is not None,
    }
    outputs = [
        prepare_channel_output(
            out,
            shape=(model.n_classes, *shape),
            dtype=np.dtype(dtype),
            chunks=(model.n_classes, *spatial_chunks),
            spacing=sp,
            params=params,
            resume=resume,
            overwrite=overwrite,
            channel_names=model.class_names,
        )
    ]
    if class_map_out is not None:
        outputs.append(
            prepare_class_map_output(
                class_map_out,
                shape=shape,
                chunks=spatial_chunks,
                spacing=sp,
                params=params,
                job="emseg.forest.class_map",
                resume=resume,
                overwrite=overwrite,
            )
        )
    run_channel_blocks(
        _predict_block,
        img,
        outputs,
        halo=model.halo(sp),
        block_shape=block_shape,
        chunks=spatial_chunks,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=progress,
        params=params,
        kwargs={
            "model": model,
            "spacing": sp,
            "dtype": dtype,
            "with_classes": class_map_out is not None,
        },
        desc="forest",
    )
    return outputs[0].array
