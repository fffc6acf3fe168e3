"""Instance metrics from the overlap table: IoU matching, AP, COCO mAP, AJI, PQ, object tables.

Label 0 is background on both sides and is never an object. Object sizes are
the full row / column sums of the table (so the part of an object that
overlaps background still counts in its union).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from emseg.errors import EmsegValueError
from emseg.metrics._rand import as_table
from emseg.metrics._tables import OverlapTable

__all__ = [
    "AveragePrecision",
    "Matching",
    "ObjectTables",
    "PanopticQuality",
    "aggregated_jaccard_index",
    "average_precision",
    "coco_average_precision",
    "match_instances",
    "mitoem_average_precision",
    "object_tables",
    "panoptic_quality",
]

DSB_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
"""IoU thresholds 0.50, 0.55, ..., 0.95 (DSB 2018, COCO)."""


@dataclass(frozen=True, eq=False)
class _Objects:
    truth_ids: np.ndarray  # (Nt,) uint64, nonzero
    truth_sizes: np.ndarray  # (Nt,) int64
    pred_ids: np.ndarray
    pred_sizes: np.ndarray
    ti: np.ndarray  # (K,) index into truth_ids of each overlapping pair
    pi: np.ndarray  # (K,) index into pred_ids
    inter: np.ndarray  # (K,) int64
    iou: np.ndarray  # (K,) float64


def _objects(tab: OverlapTable) -> _Objects:
    t_ids, t_sizes = tab.truth_sizes()
    p_ids, p_sizes = tab.pred_sizes()
    keep_t, keep_p = t_ids != 0, p_ids != 0
    t_ids, t_sizes, p_ids, p_sizes = t_ids[keep_t], t_sizes[keep_t], p_ids[keep_p], p_sizes[keep_p]
    pairs = (tab.truth_ids != 0) & (tab.pred_ids != 0)
    ti = np.searchsorted(t_ids, tab.truth_ids[pairs])
    pi = np.searchsorted(p_ids, tab.pred_ids[pairs])
    inter = tab.counts[pairs]
    iou = inter / (t_sizes[ti] + p_sizes[pi] - inter)
    return _Objects(t_ids, t_sizes, p_ids, p_sizes, ti, pi, inter, iou)


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 < t <= 1.0:
        raise EmsegValueError(f"`threshold` must be in (0, 1]; got {threshold}.")
    return t


def _one_to_one(obj: _Objects, cand: np.ndarray) -> np.ndarray:
    """Indices of candidate pairs forming a maximum one-to-one matching.

    Maximises the number of matches, then their summed IoU (StarDist's cost).
    Conflicts are solved per connected component with the Hungarian method.
    """
    idx = np.flatnonzero(cand)
    ti, pi = obj.ti[idx], obj.pi[idx]
    if np.unique(ti).size == ti.size and np.unique(pi).size == pi.size:
        return idx
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    nt = obj.truth_ids.size
    n_nodes = nt + obj.pred_ids.size
    graph = coo_array((np.ones(idx.size), (ti, nt + pi)), shape=(n_nodes, n_nodes))
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[ti]
    order = np.argsort(edge_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    chosen: list[np.ndarray] = []
    for grp in np.split(order, bounds):
        if grp.size == 1:
            chosen.append(idx[grp])
            continue
        rows, r_inv = np.unique(ti[grp], return_inverse=True)
        cols, c_inv = np.unique(pi[grp], return_inverse=True)
        n_match = min(rows.size, cols.size)
        cost = np.zeros((rows.size, cols.size))
        cost[r_inv, c_inv] = -(1.0 + obj.iou[idx[grp]] / (2.0 * n_match))
        r, c = linear_sum_assignment(cost)
        lookup = {(int(a), int(b)): int(e) for a, b, e in zip(r_inv, c_inv, idx[grp], strict=True)}
        sel = [lookup[(int(a), int(b))] for a, b in zip(r, c, strict=True) if cost[a, b] < 0]
        chosen.append(np.asarray(sel, dtype=np.int64))
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True, eq=False)
class Matching:
    """One-to-one matching of truth and predicted objects at an IoU threshold.

    Attributes
    ----------
    threshold : float
        Pairs with IoU >= threshold may match.
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched truth objects.
    precision, recall, f1 : float
        TP/(TP+FP), TP/(TP+FN), 2TP/(2TP+FP+FN).
    accuracy : float
        TP/(TP+FP+FN): the DSB 2018 "average precision" at this threshold.
    mean_matched_iou : float
        Mean IoU of the matched pairs (NaN without matches).
    truth_ids, pred_ids : (TP,) ndarray of uint64
    ious : (TP,) ndarray of float64
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    mean_matched_iou: float
    truth_ids: np.ndarray
    pred_ids: np.ndarray
    ious: np.ndarray


def _nan_div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _match(obj: _Objects, threshold: float, *, strict: bool = False) -> Matching:
    cand = obj.iou > threshold if strict else obj.iou >= threshold
    sel = _one_to_one(obj, cand)
    tp = int(sel.size)
    fp = int(obj.pred_ids.size) - tp
    fn = int(obj.truth_ids.size) - tp
    ious = obj.iou[sel]
    return Matching(
        threshold,
        tp,
        fp,
        fn,
        _nan_div(tp, tp + fp),
        _nan_div(tp, tp + fn),
        _nan_div(2 * tp, 2 * tp + fp + fn),
        _nan_div(tp, tp + fp + fn),
        float(ious.mean()) if tp else float("nan"),
        obj.truth_ids[obj.ti[sel]],
        obj.pred_ids[obj.pi[sel]],
        ious,
    )


def match_instances(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    threshold: float = 0.5,
    mask: ArrayLike | None = None,
) -> Matching:
    """Match truth and predicted objects one-to-one where IoU >= `threshold`.

    Parameters
    ----------
    truth : ndarray of int, or OverlapTable
        Instance labels, 0 = background.
    prediction : ndarray of int, same shape as `truth`
    threshold : float in (0, 1], default 0.5
        Above 0.5 every object has at most one candidate, so the matching is
        unique; otherwise (or on exact ties at 0.5) the Hungarian method
        (``scipy.optimize.linear_sum_assignment``) finds the matching with
        the most pairs and, among those, the largest summed IoU.
    mask : ndarray of bool, optional

    Returns
    -------
    Matching
        Ratios whose denominator is 0 are NaN (e.g. precision with no
        predicted object).
    """
    obj = _objects(as_table(truth, prediction, mask))
    return _match(obj, _check_threshold(threshold))


@dataclass(frozen=True, eq=False)
class AveragePrecision:
    """Average precision per IoU threshold and its mean.

    Attributes
    ----------
    thresholds, ap : (K,) ndarray of float64
    ap50, ap75 : float
        AP at IoU 0.5 and 0.75 (NaN when not among the thresholds).
    map : float
        Mean of `ap` over the thresholds.
    """

    thresholds: np.ndarray
    ap: np.ndarray
    ap50: float
    ap75: float
    map: float


def _ap_result(th: np.ndarray, ap: np.ndarray) -> AveragePrecision:
    def at(v: float) -> float:
        hit = np.flatnonzero(np.isclose(th, v))
        return float(ap[hit[0]]) if hit.size else float("nan")

    m = float(ap.mean()) if ap.size and not np.any(np.isnan(ap)) else float("nan")
    return AveragePrecision(th, ap, at(0.5), at(0.75), m)


def _thresholds(thresholds: ArrayLike) -> np.ndarray:
    th = np.asarray(thresholds, dtype=np.float64).ravel()
    if th.size == 0:
        raise EmsegValueError("`thresholds` must not be empty.")
    for t in th:
        _check_threshold(t)
    return th


def average_precision(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    thresholds: ArrayLike = DSB_THRESHOLDS,
    mask: ArrayLike | None = None,
) -> AveragePrecision:
    """Average precision in the DSB 2018 sense: TP / (TP + FP + FN) per IoU threshold.

    Parameters
    ----------
    truth, prediction, mask
        As for :func:`match_instances`.
    thresholds : sequence of float, default 0.50, 0.55, ..., 0.95

    Returns
    -------
    AveragePrecision
        NaN at a threshold when there is no object on either side.
    """
    obj = _objects(as_table(truth, prediction, mask))
    th = _thresholds(thresholds)
    ap = np.array([_match(obj, float(t)).accuracy for t in th])
    return _ap_result(th, ap)


def coco_average_precision(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    scores: Mapping[int, float] | ArrayLike,
    thresholds: ArrayLike = DSB_THRESHOLDS,
    mask: ArrayLike | None = None,
) -> AveragePrecision:
    """COCO-style average precision of scored predicted objects.

    At each IoU threshold the predictions are visited by decreasing score
    (stable order on ties); each takes the unmatched truth object of highest
    IoU >= threshold (as ``pycocotools`` COCOeval). The precision-recall
    curve is made monotone and sampled at 101 recall points
    (0, 0.01, ..., 1); AP is their mean. No detection limit, no area ranges,
    no crowd regions.

    Parameters
    ----------
    truth, prediction, mask
        As for :func:`match_instances`.
    scores : mapping of label to float, or 1D array indexed by label
        Confidence of every predicted object.
    thresholds : sequence of float, default 0.50, 0.55, ..., 0.95

    Returns
    -------
    AveragePrecision
        NaN when there is no truth object (COCO reports -1).
    """
    obj = _objects(as_table(truth, prediction, mask))
    th = _thresholds(thresholds)
    if isinstance(scores, Mapping):
        missing = [int(i) for i in obj.pred_ids if int(i) not in scores]
        if missing:
            raise EmsegValueError(
                f"`scores` has no entry for predicted labels {missing[:5]}; give every object a score."
            )
        sc = np.array([float(scores[int(i)]) for i in obj.pred_ids])
    else:
        arr = np.asarray(scores, dtype=np.float64).ravel()
        if obj.pred_ids.size and int(obj.pred_ids.max()) >= arr.size:
            raise EmsegValueError(
                f"`scores` has {arr.size} entries but the largest predicted label is "
                f"{int(obj.pred_ids.max())}; index it by label."
            )
        sc = arr[obj.pred_ids.astype(np.int64)]
    order = np.argsort(-sc, kind="mergesort")
    n_gt = obj.truth_ids.size
    # pairs grouped by prediction
    by_pred = np.argsort(obj.pi, kind="stable")
    starts = np.searchsorted(obj.pi[by_pred], np.arange(obj.pred_ids.size + 1))
    ap = np.empty(th.size)
    for k, t in enumerate(th):
        taken = np.zeros(n_gt, dtype=bool)
        hits = np.zeros(order.size, dtype=bool)
        for rank, d in enumerate(order):
            grp = by_pred[starts[d] : starts[d + 1]]
            best, best_iou = -1, min(float(t), 1 - 1e-10)
            for e in grp:
                g = obj.ti[e]
                if taken[g] or obj.iou[e] < best_iou:
                    continue
                best, best_iou = g, obj.iou[e]
            if best >= 0:
                taken[best] = True
                hits[rank] = True
        ap[k] = _coco_ap(hits, n_gt)
    return _ap_result(th, ap)


def mitoem_average_precision(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    scores: Mapping[int, float] | ArrayLike | None = None,
    threshold: float = 0.75,
    mask: ArrayLike | None = None,
) -> float:
    """MitoEM-style AP-75: COCO average precision of 3D instances at one IoU threshold.

    The MitoEM challenge (Wei et al. 2020, evaluation code ``mAP_3Dvolume``)
    runs the COCO protocol on whole 3D objects: IoU of voxel sets,
    predictions visited by decreasing score, monotone precision sampled at
    101 recall points, area range "all", reported at IoU 0.75. Without
    scores its code ranks predictions by their size in voxels; so does this
    function (ties in stable label order). Exact on any volume size: it
    needs only the overlap table.

    Parameters
    ----------
    truth, prediction, mask
        As for :func:`match_instances` (2D works too, but the protocol is 3D).
    scores : mapping of label to float, or 1D array indexed by label, optional
        Confidence of every predicted object; default its voxel count.
    threshold : float, default 0.75

    Returns
    -------
    float
        NaN when there is no truth object (COCO reports -1).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((2, 4, 4), np.uint8); t[:, :2] = 1; t[:, 2:] = 2
    >>> p = t.copy(); p[:, 3] = 0  # object 2 loses half its voxels: IoU 0.5
    >>> mitoem_average_precision(t, p)  # 1 of 2 found: precision 1 up to recall 0.5
    0.504950495049505
    """
    tab = as_table(truth, prediction, mask)
    if scores is None:
        ids, sizes = tab.pred_sizes()
        keep = ids != 0
        scores = dict(zip(ids[keep].tolist(), sizes[keep].astype(np.float64).tolist(), strict=True))
    th = _check_threshold(threshold)
    return float(coco_average_precision(tab, scores=scores, thresholds=[th]).ap[0])


def _coco_ap(hits: np.ndarray, n_gt: int) -> float:
    if n_gt == 0:
        return float("nan")
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
    r_pts = np.linspace(0.0, 1.0, 101)
    pos = np.searchsorted(recall, r_pts, side="left")
    q = np.zeros(r_pts.size)
    ok = pos < recall.size
    q[ok] = precision[pos[ok]]
    return float(q.mean())


def aggregated_jaccard_index(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    mask: ArrayLike | None = None,
) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017, the original AJI, not AJI+).

    For each truth object G the predicted object S of largest IoU with it
    (lowest label on ties; none when nothing overlaps) adds ``|G ∩ S|`` to C
    and ``|G ∪ S|`` to U (``|G|`` when none); a prediction may serve several
    truth objects. Then every predicted object never chosen adds its size to
    U. AJI = C / U; NaN when U = 0 (no object at all).

    Returns
    -------
    float
    """
    obj = _objects(as_table(truth, prediction, mask))
    best = _best_partner(obj.ti, obj.pi, obj.iou, obj.truth_ids.size)
    has = best >= 0
    inter = np.zeros(obj.truth_ids.size, np.int64)
    inter[has] = obj.inter[best[has]]
    union = obj.truth_sizes.copy()
    union[has] += obj.pred_sizes[obj.pi[best[has]]] - inter[has]
    used = np.zeros(obj.pred_ids.size, dtype=bool)
    used[obj.pi[best[has]]] = True
    c = int(inter.sum())
    u = int(union.sum()) + int(obj.pred_sizes[~used].sum())
    return c / u if u else float("nan")


def _best_partner(a: np.ndarray, b: np.ndarray, iou: np.ndarray, n_a: int) -> np.ndarray:
    """For each object on side a, the pair index of its largest IoU (-1 if none)."""
    best = np.full(n_a, -1, dtype=np.int64)
    if a.size == 0:
        return best
    order = np.lexsort((b, -iou, a))
    first = np.ones(order.size, dtype=bool)
    first[1:] = a[order][1:] != a[order][:-1]
    best[a[order][first]] = order[first]
    return best


@dataclass(frozen=True)
class PanopticQuality:
    """Panoptic quality of one class of objects (Kirillov et al. 2019).

    Attributes
    ----------
    pq : float
        ``Σ IoU(matched) / (TP + FP/2 + FN/2)`` = SQ x RQ.
    sq : float
        Mean IoU of the matched pairs (NaN without matches).
    rq : float
        ``TP / (TP + FP/2 + FN/2)`` (an F1 score).
    tp, fp, fn : int
    """

    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int


def panoptic_quality(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    mask: ArrayLike | None = None,
) -> PanopticQuality:
    """Panoptic quality with matches at IoU > 0.5 (unique), label 0 = background.

    Returns
    -------
    PanopticQuality
        PQ and RQ are NaN only when there is no object at all; SQ is NaN
        without a match.
    """
    obj = _objects(as_table(truth, prediction, mask))
    m = _match(obj, 0.5, strict=True)
    den = m.tp + 0.5 * m.fp + 0.5 * m.fn
    return PanopticQuality(
        _nan_div(float(m.ious.sum()), den),
        m.mean_matched_iou,
        _nan_div(m.tp, den),
        m.tp,
        m.fp,
        m.fn,
    )


@dataclass(frozen=True, eq=False)
class ObjectTables:
    """One row per truth object and one per predicted object (pandas DataFrames).

    Columns of both: ``label``, ``size`` (voxels), ``best_match`` (label of the
    other side with the largest IoU, 0 when nothing overlaps), ``best_iou``,
    ``n_split`` and ``n_merged``.

    For a truth object ``n_split`` counts the predicted objects that hold more
    than `min_fraction` of it (1 = not split) and ``n_merged`` the truth
    objects that have more than `min_fraction` of their voxels in its best
    match (1 = not merged). For a predicted object ``n_merged`` counts the
    truth objects that hold more than `min_fraction` of it (it merges them)
    and ``n_split`` the predicted objects that hold more than `min_fraction`
    of its best match.
    """

    truth: Any
    prediction: Any


def _side_table(
    ids: np.ndarray,
    sizes: np.ndarray,
    other_ids: np.ndarray,
    other_sizes: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    inter: np.ndarray,
    iou: np.ndarray,
    frac: float,
) -> dict[str, np.ndarray]:
    best = _best_partner(a, b, iou, ids.size)
    has = best >= 0
    best_match = np.zeros(ids.size, np.uint64)
    best_iou = np.zeros(ids.size)
    best_match[has] = other_ids[b[best[has]]]
    best_iou[has] = iou[best[has]]
    # pieces of this object: partners holding > frac of it
    big_of_self = inter > frac * sizes[a]
    n_pieces = np.bincount(a[big_of_self], minlength=ids.size)
    # objects of this side with > frac of themselves inside each partner
    per_partner = np.bincount(b[big_of_self], minlength=other_ids.size)
    n_shared = np.zeros(ids.size, np.int64)
    n_shared[has] = per_partner[b[best[has]]]
    return {
        "label": ids,
        "size": sizes,
        "best_match": best_match,
        "best_iou": best_iou,
        "n_pieces": n_pieces,
        "n_shared": n_shared,
    }


def object_tables(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    min_fraction: float = 0.05,
    mask: ArrayLike | None = None,
) -> ObjectTables:
    """Per-object split / merge diagnosis for truth and predicted objects.

    Parameters
    ----------
    truth, prediction, mask
        As for :func:`match_instances`.
    min_fraction : float in [0, 1), default 0.05
        An overlap counts as a piece when it is more than this fraction of
        the object it is measured against.

    Returns
    -------
    ObjectTables
        Two pandas DataFrames sorted by label (see :class:`ObjectTables`).
    """
    import pandas as pd

    if not 0.0 <= min_fraction < 1.0:
        raise EmsegValueError(f"`min_fraction` must be in [0, 1); got {min_fraction}.")
    obj = _objects(as_table(truth, prediction, mask))
    t = _side_table(obj.truth_ids, obj.truth_sizes, obj.pred_ids, obj.pred_sizes,
                    obj.ti, obj.pi, obj.inter, obj.iou, min_fraction)  # fmt: skip
    p = _side_table(obj.pred_ids, obj.pred_sizes, obj.truth_ids, obj.truth_sizes,
                    obj.pi, obj.ti, obj.inter, obj.iou, min_fraction)  # fmt: skip
    truth_df = pd.DataFrame(t).rename(columns={"n_pieces": "n_split", "n_shared": "n_merged"})
    pred_df = pd.DataFrame(p).rename(columns={"n_pieces": "n_merged", "n_shared": "n_split"})
    cols = ["label", "size", "best_match", "best_iou", "n_split", "n_merged"]
    return ObjectTables(truth_df[cols], pred_df[cols])
