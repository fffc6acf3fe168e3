"""Geometric scores (Hausdorff, warping error, ISBI 2012 sweep) on volumes of any size.

These need neighbourhoods, so they cannot come from the additive tables.
How each is computed at scale:

* **Hausdorff / HD95** — per object pair inside the union of the pair's two
  bounding boxes grown by one voxel (the boxes come from the blockwise
  moments; only that box is read from disk). Pairs: the single foreground
  pair for binary masks, the one-to-one IoU >= 0.5 matches for instance
  labels, the same class id on both sides for multi-class maps. Identical to
  :func:`emseg.metrics.hausdorff_distance` / ``hausdorff_per_object``,
  whatever the volume size; a pair whose box holds more than `limit` voxels
  is skipped (reported in the notes) so that memory stays bounded.
* **Warping error** — per 2D section (as the ISBI 2012 challenge and
  :func:`emseg.metrics.warping_error` do for stacks): one section is read at
  a time and the topological errors are summed, so the result equals the
  in-memory one exactly; memory is one section.
* **ISBI 2012 V_rand / V_info threshold sweep** — pools pair counts over all
  sections at every threshold after border thinning; computed in memory when
  the volume holds at most `limit` voxels, otherwise skipped (the table-based
  ``isbi_vrand`` / ``isbi_vinfo`` of the label volumes remain).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from emseg.evaluation._moments import ObjectMoments
from emseg.evaluation._tables import prepare_labels

log = logging.getLogger(__name__)

__all__ = ["hausdorff_pairs", "isbi_sweep", "streamed_warping_error"]


def _box(moments: ObjectMoments, label: int, ndim: int) -> tuple[np.ndarray, np.ndarray] | None:
    i = int(np.searchsorted(moments.ids, np.uint64(label)))
    if i >= moments.ids.size or int(moments.ids[i]) != label:
        return None
    lo, hi = moments.lo[i], moments.hi[i] + 1
    return (lo[3 - ndim :], hi[3 - ndim :])


def hausdorff_pairs(
    truth: Any,
    prediction: Any,
    pairs: Sequence[tuple[int, int]],
    *,
    truth_moments: ObjectMoments,
    pred_moments: ObjectMoments,
    spacing: tuple[float, ...],
    truth_threshold: float | None,
    pred_threshold: float | None,
    limit: int,
) -> dict[str, Any]:
    """Hausdorff distance and HD95 (nm) of each (truth label, predicted label) pair.

    Each pair is measured on the union of its two bounding boxes + 1 voxel,
    read from `truth` / `prediction` (any sliceable arrays). A label missing
    on one side gives ``inf`` (NaN when missing on both).

    Returns
    -------
    dict
        ``pairs`` (list), ``hausdorff``, ``hausdorff95`` ((K,) float64, NaN
        for skipped pairs), ``skipped`` (number of pairs whose box exceeded
        `limit` voxels), ``mean_hausdorff``, ``mean_hausdorff95`` (means
        over measured pairs; NaN without one).
    """
    from emseg.metrics import hausdorff_distance

    shape = tuple(int(s) for s in truth.shape)
    ndim = len(shape)
    hd = np.full(len(pairs), np.nan)
    hd95 = np.full(len(pairs), np.nan)
    skipped = 0
    for k, (a, b) in enumerate(pairs):
        ba, bb = _box(truth_moments, a, ndim), _box(pred_moments, b, ndim)
        if ba is None and bb is None:
            continue
        if ba is None or bb is None:
            hd[k] = hd95[k] = math.inf
            continue
        lo = np.maximum(np.minimum(ba[0], bb[0]) - 1, 0)
        hi = np.minimum(np.maximum(ba[1], bb[1]) + 1, shape)
        if int(np.prod(hi - lo)) > limit:
            skipped += 1
            continue
        sl = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi, strict=True))
        t = prepare_labels(np.asarray(truth[sl]), truth_threshold) == a
        p = prepare_labels(np.asarray(prediction[sl]), pred_threshold) == b
        r = hausdorff_distance(t, p, spacing=spacing)
        hd[k], hd95[k] = r.hausdorff, r.hausdorff95
    measured = ~np.isnan(hd)
    return {
        "pairs": [(int(a), int(b)) for a, b in pairs],
        "hausdorff": hd,
        "hausdorff95": hd95,
        "skipped": skipped,
        "mean_hausdorff": float(hd[measured].mean()) if measured.any() else math.nan,
        "mean_hausdorff95": float(hd95[measured].mean()) if measured.any() else math.nan,
    }


def streamed_warping_error(
    truth: Any,
    prediction: Any,
    *,
    probabilities: Any = None,
    truth_threshold: float | None,
    pred_threshold: float | None,
) -> float:
    """Warping error of ``truth != 0`` toward the prediction, one 2D section at a time.

    The prediction is `probabilities` (foreground probability, binarised at
    0.5 by :func:`emseg.metrics.warping_error`) when given, else
    ``prediction != 0``. Returns total topological errors / voxels; equal to
    :func:`emseg.metrics.warping_error` on the whole stack.
    """
    from emseg.metrics import warping_error

    shape = tuple(int(s) for s in truth.shape)
    sections = [()] if len(shape) == 2 else [(z,) for z in range(shape[0])]
    errors = 0
    total = 0
    for sec in sections:
        t = prepare_labels(np.asarray(truth[sec]), truth_threshold) != 0
        if probabilities is not None:
            p = np.asarray(probabilities[sec]).astype(np.float64, copy=False)
        else:
            p = prepare_labels(np.asarray(prediction[sec]), pred_threshold) != 0
        w = warping_error(t, p, classify=False)
        errors += w.n_topological_errors
        total += w.n_voxels
    return errors / total if total else math.nan


def isbi_sweep(
    truth: Any, probabilities: Any, *, truth_threshold: float | None
) -> tuple[float, float]:
    """ISBI 2012 maximal V_rand and V_info of the foreground probability map (in memory)."""
    from emseg.metrics import isbi2012_scores

    t = prepare_labels(np.asarray(truth[...]), truth_threshold)
    prob = np.asarray(probabilities[...]).astype(np.float64, copy=False)
    # interior probability = the challenge's "boundary is dark" submission format
    s = isbi2012_scores(t, prob, boundary_is_dark=True)
    return s.v_rand, s.v_info
