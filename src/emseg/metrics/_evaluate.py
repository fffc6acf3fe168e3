"""Dicts of named scores under the ``emseg evaluate --json`` keys (see docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from emseg._checks import SpacingLike
from emseg.errors import EmsegValueError
from emseg.metrics._matching import (
    _check_threshold,
    _match,
    _objects,
    aggregated_jaccard_index,
    average_precision,
    coco_average_precision,
    mitoem_average_precision,
    panoptic_quality,
)
from emseg.metrics._pixel import ConfusionMatrix, ProbabilityHistogram, semantic_metrics
from emseg.metrics._rand import adapted_rand_error, as_table, rand_index
from emseg.metrics._tables import OverlapTable
from emseg.metrics._voi import isbi_information_scores, voi

__all__ = [
    "CONVENTIONS",
    "INSTANCE_KEYS",
    "NEURON_KEYS",
    "SEMANTIC_KEYS",
    "evaluate_tables",
    "geometric_metrics",
    "instance_metrics",
    "neuron_metrics",
]

NEURON_KEYS = (
    "rand_index",
    "adapted_rand_error_cremi",
    "adapted_rand_error_isbi2012",
    "adapted_rand_error_skimage",
    "voi_split",
    "voi_merge",
    "isbi_vrand",
    "isbi_vinfo",
)
INSTANCE_KEYS = (
    "ap50",
    "ap75",
    "map",
    "aji",
    "pq",
    "sq",
    "rq",
    "f1_50",
    "coco_map",
    "coco_ap50",
    "coco_ap75",
    "mitoem_ap75",
)
SEMANTIC_KEYS = (
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "dice",
    "jaccard",
    "conformity",
    "pixel_error",
)
GEOMETRIC_KEYS = ("warping_error", "hausdorff", "hausdorff95")

CONVENTIONS: dict[str, Any] = {
    "order": "truth, prediction",
    "background_label": 0,
    "rand_index": "all voxels, label 0 an ordinary segment, unordered pairs",
    "adapted_rand_error_cremi": "truth 0 ignored; predicted 0 singletons weighted 1/n (CREMI)",
    "adapted_rand_error_isbi2012": "truth 0 ignored; predicted 0 singletons (Fiji V_rand)",
    "adapted_rand_error_skimage": "truth 0 ignored; predicted 0 an ordinary segment",
    "voi": "bits (log2); truth label 0 ignored; split = H(P|T), merge = H(T|P)",
    "isbi_vrand": "1 - adapted_rand_error_isbi2012 (higher is better)",
    "isbi_vinfo": "2 I / (H(T) + H(P)); truth 0 ignored, predicted 0 singletons",
    "instances": "label 0 = background; IoU matching one-to-one",
    "ap": "DSB 2018: TP / (TP + FP + FN) at IoU >= t; map over t = 0.50:0.95:0.05",
    "map": "DSB 2018 (ap averaged over IoU 0.50:0.95:0.05), never COCO; COCO is coco_map",
    "coco_map": (
        "COCO mAP@[.50:.95] of scored predictions (pycocotools matching by decreasing score, "
        "101-point interpolated precision; no detection limit, area range all); "
        "null without scores"
    ),
    "mitoem_ap75": (
        "MitoEM (mAP_3Dvolume): COCO AP at IoU 0.75 of whole 3D objects; scores = the given "
        "ones, else each predicted object's voxel count (as its reference code)"
    ),
    "aji": "Kumar et al. 2017 (original, not AJI+)",
    "pq": "Kirillov et al. 2019, IoU > 0.5",
    "f1_50": "2 TP / (2 TP + FP + FN) at IoU >= 0.5",
    "semantic_average": "binary: foreground = every nonzero class",
    "pixel_error": "ISBI 2012: 1 - max F-score over thresholds 0.0:1.0:0.1",
    "zero_division": "NaN (null in JSON)",
    "hausdorff": (
        "nm (spacing); surfaces = foreground voxels with a background face neighbour; "
        "binary masks: foreground vs foreground, label volumes: mean over IoU >= 0.5 matches; "
        "NaN both empty, inf one empty"
    ),
    "hausdorff95": "95th percentile of both directed surface-distance sets pooled (medpy hd95)",
    "warping_error": (
        "Jain et al. 2010 / Fiji: truth warped by simple points toward prediction > 0.5 "
        "(foreground 4-, background 8-connected, per 2D section); remaining / voxels"
    ),
    "isbi_challenge": (
        "with boundary probabilities: isbi_vrand / isbi_vinfo are the ISBI 2012 maxima over "
        "thresholds 0.0:1.0:0.1 after border thinning (isbi2012_scores)"
    ),
}


def neuron_metrics(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    mask: ArrayLike | None = None,
) -> dict[str, float]:
    """Every Rand / VOI-family score from one overlap table.

    Parameters
    ----------
    truth : ndarray of int, or OverlapTable
        Ground-truth labels (0 = unlabelled), or their table with the
        prediction (then leave out `prediction` and `mask`).
    prediction : ndarray of int, same shape as `truth`
    mask : ndarray of bool, optional

    Returns
    -------
    dict of str to float
        Keys ``rand_index, adapted_rand_error_cremi,
        adapted_rand_error_isbi2012, adapted_rand_error_skimage, voi_split,
        voi_merge, isbi_vrand, isbi_vinfo`` (conventions in
        :data:`CONVENTIONS`).
    """
    tab = as_table(truth, prediction, mask)
    v = voi(tab)
    isbi = adapted_rand_error(tab, variant="isbi2012")
    return {
        "rand_index": rand_index(tab).rand_index,
        "adapted_rand_error_cremi": adapted_rand_error(tab, variant="cremi").error,
        "adapted_rand_error_isbi2012": isbi.error,
        "adapted_rand_error_skimage": adapted_rand_error(tab, variant="skimage").error,
        "voi_split": v.split,
        "voi_merge": v.merge,
        "isbi_vrand": isbi.f_score,
        "isbi_vinfo": isbi_information_scores(tab).v_info,
    }


def instance_metrics(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    mask: ArrayLike | None = None,
    scores: Mapping[int, float] | ArrayLike | None = None,
) -> dict[str, float]:
    """Every matching-based instance score from one overlap table.

    Parameters
    ----------
    truth, prediction, mask
        As for :func:`match_instances`.
    scores : mapping of label to float, or 1D array indexed by label, optional
        Confidence of every predicted object: gives the COCO keys and the
        MitoEM AP-75 with these scores (without them: ``coco_*`` are NaN and
        ``mitoem_ap75`` ranks by object size, as MitoEM's code does).

    Returns
    -------
    dict of str to float
        Keys ``ap50, ap75, map`` (DSB 2018: TP / (TP + FP + FN), ``map`` its
        mean over IoU 0.50:0.95), ``aji, pq, sq, rq, f1_50``, ``coco_map,
        coco_ap50, coco_ap75`` (:func:`coco_average_precision`) and
        ``mitoem_ap75`` (:func:`mitoem_average_precision`).
    """
    tab = as_table(truth, prediction, mask)
    ap = average_precision(tab)
    pq = panoptic_quality(tab)
    f1 = _match(_objects(tab), _check_threshold(0.5)).f1
    nan = float("nan")
    coco = None if scores is None else coco_average_precision(tab, scores=scores)
    return {
        "ap50": ap.ap50,
        "ap75": ap.ap75,
        "map": ap.map,
        "aji": aggregated_jaccard_index(tab),
        "pq": pq.pq,
        "sq": pq.sq,
        "rq": pq.rq,
        "f1_50": f1,
        "coco_map": nan if coco is None else coco.map,
        "coco_ap50": nan if coco is None else coco.ap50,
        "coco_ap75": nan if coco is None else coco.ap75,
        "mitoem_ap75": (
            coco.ap75 if coco is not None else mitoem_average_precision(tab, threshold=0.75)
        ),
    }


def geometric_metrics(
    truth: ArrayLike,
    prediction: ArrayLike | None = None,
    *,
    boundary_probabilities: ArrayLike | None = None,
    spacing: SpacingLike = None,
) -> dict[str, float]:
    """The neighbourhood-based scores under their ``emseg evaluate --json`` keys.

    Parameters
    ----------
    truth : (Y, X) or (Z, Y, X) ndarray of int
        Ground truth; 0 = background (for ISBI 2012 data: 0 = membrane).
    prediction : ndarray of int, same shape, optional
        Predicted mask or labels. Gives ``hausdorff`` and ``hausdorff95``
        (binary when both hold at most one nonzero label, else the mean over
        IoU >= 0.5 matched objects) and, without `boundary_probabilities`,
        ``warping_error`` of ``prediction != 0`` against ``truth != 0``.
    boundary_probabilities : ndarray of float in [0, 1], same shape, optional
        Membrane probability (1 = membrane). Gives ``warping_error`` of
        ``1 - p > 0.5`` and the ISBI 2012 ``isbi_vrand`` / ``isbi_vinfo``
        (maxima over thresholds after border thinning).
    spacing : float or sequence of float, optional
        Voxel size in nm for the distances.

    Returns
    -------
    dict of str to float
        Only the keys that the given inputs determine, among
        ``warping_error, hausdorff, hausdorff95, isbi_vrand, isbi_vinfo``.
    """
    from emseg.metrics._hausdorff import hausdorff_distance, hausdorff_per_object
    from emseg.metrics._isbi import isbi2012_scores
    from emseg.metrics._warping import warping_error

    t = np.asarray(truth)
    out: dict[str, float] = {}
    if prediction is not None:
        p = np.asarray(prediction)
        binary = all(np.unique(a[a != 0]).size <= 1 for a in (t, p))
        if binary:
            hd = hausdorff_distance(t, p, spacing=spacing)
            out["hausdorff"], out["hausdorff95"] = hd.hausdorff, hd.hausdorff95
        else:
            obj = hausdorff_per_object(t, p, spacing=spacing)
            out["hausdorff"], out["hausdorff95"] = obj.mean_hausdorff, obj.mean_hausdorff95
        if boundary_probabilities is None:
            out["warping_error"] = warping_error(t != 0, p != 0, classify=False).warping_error
    if boundary_probabilities is not None:
        b = np.asarray(boundary_probabilities)
        interior = 1.0 - b.astype(np.float64) if b.dtype.kind == "f" else ~(b != 0)
        out["warping_error"] = warping_error(t != 0, interior, classify=False).warping_error
        isbi = isbi2012_scores(t, b)
        out["isbi_vrand"], out["isbi_vinfo"] = isbi.v_rand, isbi.v_info
    return out


def evaluate_tables(
    *,
    overlap: OverlapTable | None = None,
    confusion: ConfusionMatrix | None = None,
    histogram: ProbabilityHistogram | None = None,
    geometric: Mapping[str, float] | None = None,
    scores: Mapping[int, float] | ArrayLike | None = None,
) -> dict[str, Any]:
    """All scores computable from the given (possibly block-merged) tables.

    Parameters
    ----------
    overlap : OverlapTable, optional
        Gives the neuron and instance scores.
    confusion : ConfusionMatrix, optional
        Gives the semantic scores (binary: foreground = nonzero classes).
    histogram : ProbabilityHistogram, optional
        Gives ``pixel_error`` (its thresholds are used as given).
    geometric : mapping of str to float, optional
        The output of :func:`geometric_metrics` (computed per volume, not
        from tables): fills ``warping_error, hausdorff, hausdorff95`` and,
        when present, replaces the table's ``isbi_vrand`` / ``isbi_vinfo``
        with the ISBI 2012 threshold-sweep scores.
    scores : mapping of label to float, or 1D array indexed by label, optional
        Confidence of every predicted object: gives ``coco_map``,
        ``coco_ap50``, ``coco_ap75`` (None without it).

    Returns
    -------
    dict
        Every key of the ``emseg evaluate --json`` schema: a float, or None
        when the needed input was not given, plus ``"conventions"``.
    """
    keys = SEMANTIC_KEYS + NEURON_KEYS + GEOMETRIC_KEYS + INSTANCE_KEYS
    out: dict[str, Any] = dict.fromkeys(keys)
    if confusion is not None:
        sem = semantic_metrics(confusion, probabilities=histogram)
        out.update(sem)
        if histogram is None:
            out["pixel_error"] = None
    elif histogram is not None:
        from emseg.metrics._pixel import pixel_error

        out["pixel_error"] = pixel_error(histogram).pixel_error
    if overlap is not None:
        out.update(neuron_metrics(overlap))
        out.update(instance_metrics(overlap, scores=scores))
        if scores is None:
            out.update(dict.fromkeys(("coco_map", "coco_ap50", "coco_ap75")))
    if geometric is not None:
        allowed = {*GEOMETRIC_KEYS, "isbi_vrand", "isbi_vinfo"}
        unknown = set(geometric) - allowed
        if unknown:
            raise EmsegValueError(
                f"`geometric` may only hold the keys {sorted(allowed)}; got {sorted(unknown)}."
            )
        out.update({k: float(v) for k, v in geometric.items()})
    out["conventions"] = dict(CONVENTIONS)
    return out
