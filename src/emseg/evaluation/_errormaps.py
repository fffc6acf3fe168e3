"""Spatial error maps: a uint8 volume that says, voxel by voxel, what kind of error it is.

Codes (:data:`ERROR_CODES`), with ``best(t)`` the predicted object of largest
IoU with truth object ``t`` and ``best(p)`` the truth object of largest IoU
with predicted object ``p`` (as in :func:`emseg.metrics.object_tables`):

====  ===============  ======================================================
code  name             voxel with truth label ``t`` and predicted label ``p``
====  ===============  ======================================================
0     background       ``t == 0`` and ``p == 0``
1     correct          ``t, p != 0``, ``p == best(t)`` and ``t == best(p)``
2     false_positive   ``t == 0``, ``p != 0``
3     false_negative   ``t != 0``, ``p == 0``
4     split            ``t, p != 0``, ``p != best(t)``: the truth object goes on
                       in another predicted object here
5     merge            ``t, p != 0``, ``p == best(t)`` but ``t != best(p)``: the
                       predicted object here mostly covers another truth object
====  ===============  ======================================================

The map is written block by block through :func:`emseg.blockwise.map_blocks`
(memory bounded by blocks) as an OME-Zarr label image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emseg.evaluation._tables import prepare_labels
from emseg.metrics import OverlapTable, object_tables

__all__ = ["ERROR_CODES", "ErrorCodeView", "error_codes", "worst_sections", "write_error_maps"]

#: Code -> name of the error-map values.
ERROR_CODES: dict[int, str] = {
    0: "background",
    1: "correct",
    2: "false_positive",
    3: "false_negative",
    4: "split",
    5: "merge",
}


def _best_lookup(tab: OverlapTable) -> dict[str, np.ndarray]:
    ot = object_tables(tab)
    return {
        "t_ids": np.asarray(ot.truth["label"], np.uint64),
        "t_best": np.asarray(ot.truth["best_match"], np.uint64),
        "p_ids": np.asarray(ot.prediction["label"], np.uint64),
        "p_best": np.asarray(ot.prediction["best_match"], np.uint64),
    }


def _lookup(values: np.ndarray, ids: np.ndarray, best: np.ndarray) -> np.ndarray:
    if ids.size == 0:
        return np.zeros(values.shape, np.uint64)
    idx = np.clip(np.searchsorted(ids, values), 0, ids.size - 1)
    found = ids[idx] == values
    return np.where(found, best[idx], np.uint64(0))


def error_codes(
    truth: np.ndarray,
    prediction: np.ndarray,
    *,
    lookup: dict[str, np.ndarray],
    truth_threshold: float | None = None,
    pred_threshold: float | None = None,
) -> np.ndarray:
    """The :data:`ERROR_CODES` of every voxel of a block (uint8, same shape).

    `lookup` holds the global best matches (``t_ids, t_best, p_ids,
    p_best``), so a block's codes do not depend on the blocking.
    """
    t = prepare_labels(np.asarray(truth), truth_threshold).astype(np.uint64, copy=False)
    p = prepare_labels(np.asarray(prediction), pred_threshold).astype(np.uint64, copy=False)
    out = np.zeros(t.shape, np.uint8)
    tz, pz = t == 0, p == 0
    out[tz & ~pz] = 2
    out[~tz & pz] = 3
    both = ~tz & ~pz
    tb, pb = t[both], p[both]
    best_t = _lookup(tb, lookup["t_ids"], lookup["t_best"])
    best_p = _lookup(pb, lookup["p_ids"], lookup["p_best"])
    code = np.where(pb != best_t, 4, np.where(tb != best_p, 5, 1)).astype(np.uint8)
    out[both] = code
    return out


def write_error_maps(
    truth: Any,
    prediction: Any,
    out: str | Path,
    *,
    overlap: OverlapTable,
    spacing: Sequence[float] | None = None,
    truth_threshold: float | None = None,
    pred_threshold: float | None = None,
    block_shape: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Write the uint8 error map (codes in :data:`ERROR_CODES`) as an OME-Zarr, blockwise.

    Parameters
    ----------
    truth, prediction : path, array or LazyImage of int, same shape
    out : path
        A ``.zarr`` / ``.ome.zarr`` folder (a label image with the codes in
        its ``emseg.error_codes`` attribute).
    overlap : OverlapTable
        The pair's table (e.g. ``evaluate(...).overlap``): gives the best
        matches, so each block is coded consistently.
    spacing, truth_threshold, pred_threshold, block_shape, n_workers, scheduler, overwrite, progress
        As for :func:`emseg.evaluation.evaluate` and
        :func:`emseg.blockwise.map_blocks`.

    Returns
    -------
    zarr.Array
        The written level-0 array, uint8.
    """
    from emseg.blockwise import map_blocks

    arr = map_blocks(
        error_codes,
        [truth, prediction],
        out=str(out),
        dtype=np.uint8,
        block_shape=block_shape,
        spacing=spacing,
        labels=True,
        n_workers=n_workers,
        scheduler=scheduler,
        overwrite=overwrite,
        progress=progress,
        kwargs={
            "lookup": _best_lookup(overlap),
            "truth_threshold": truth_threshold,
            "pred_threshold": pred_threshold,
        },
    )
    arr.attrs["error_codes"] = {str(k): v for k, v in ERROR_CODES.items()}
    return arr


def worst_sections(error_map: Any, *, n: int = 3) -> list[dict[str, Any]]:
    """The `n` sections (axis 0) with the most error voxels (codes 2-5), worst first.

    Reads one section at a time. For a 2D map the single image is returned.

    Returns
    -------
    list of dict
        ``{"index": z, "errors": count, "counts": {name: count}}``.
    """
    shape = tuple(error_map.shape)
    if len(shape) == 2:
        sec = np.asarray(error_map[...])
        return [_section_info(0, sec)]
    infos = [_section_info(z, np.asarray(error_map[z])) for z in range(shape[0])]
    infos.sort(key=lambda d: (-d["errors"], d["index"]))
    return infos[: max(1, n)]


def _section_info(z: int, sec: np.ndarray) -> dict[str, Any]:
    counts = np.bincount(sec.ravel(), minlength=len(ERROR_CODES))
    return {
        "index": int(z),
        "errors": int(counts[2:].sum()),
        "counts": {ERROR_CODES[k]: int(counts[k]) for k in ERROR_CODES},
    }


class ErrorCodeView:
    """A lazy error map: sections of codes computed on access from truth and prediction.

    Lets the report find and draw the worst sections without writing the
    map; ``view[z]`` reads section ``z`` of both inputs only.
    """

    def __init__(
        self,
        truth: Any,
        prediction: Any,
        *,
        overlap: OverlapTable,
        truth_threshold: float | None = None,
        pred_threshold: float | None = None,
    ) -> None:
        self.truth = truth
        self.prediction = prediction
        self.shape = tuple(int(s) for s in truth.shape)
        self.dtype = np.dtype(np.uint8)
        self._lookup = _best_lookup(overlap)
        self._thresholds = (truth_threshold, pred_threshold)

    def __getitem__(self, key: Any) -> np.ndarray:
        return error_codes(
            np.asarray(self.truth[key]),
            np.asarray(self.prediction[key]),
            lookup=self._lookup,
            truth_threshold=self._thresholds[0],
            pred_threshold=self._thresholds[1],
        )
