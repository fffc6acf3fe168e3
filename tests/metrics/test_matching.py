"""Instance metrics: matching (vs enumeration of all one-to-one assignments), AP, COCO AP,
AJI, PQ and the per-object tables, on hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from emseg.errors import EmsegValueError
from emseg.metrics import (
    aggregated_jaccard_index,
    average_precision,
    coco_average_precision,
    instance_metrics,
    match_instances,
    mitoem_average_precision,
    object_tables,
    panoptic_quality,
)
from emseg.metrics._evaluate import INSTANCE_KEYS

# 1D "images": truth objects 1 (4 voxels), 2 (4 voxels), 3 (2 voxels)
TRUTH = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 3, 3, 0])
PRED = np.array([5, 5, 5, 0, 6, 6, 6, 6, 6, 0, 0, 7])
# IoU(1,5) = 3/4; IoU(2,6) = 4/5; 3 unmatched; 7 unmatched (overlaps background only)


def test_hand_matching():
    m = match_instances(TRUTH, PRED, threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (2, 1, 1)
    assert m.truth_ids.tolist() == [1, 2]
    assert m.pred_ids.tolist() == [5, 6]
    assert m.ious == pytest.approx([0.75, 0.8])
    assert m.mean_matched_iou == pytest.approx(0.775)
    assert (m.precision, m.recall, m.f1, m.accuracy) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 0.5))
    m = match_instances(TRUTH, PRED, threshold=0.78)
    assert (m.tp, m.fp, m.fn) == (1, 2, 2)


def test_ap_hand_case():
    ap = average_precision(TRUTH, PRED)
    # thresholds 0.5..0.75: TP = 2 -> 2/4; 0.8: TP = 1 -> 1/5; 0.85..0.95: 0
    expected = [0.5] * 6 + [0.2] + [0.0] * 3
    np.testing.assert_allclose(ap.ap, expected)
    assert ap.ap50 == 0.5
    assert ap.ap75 == 0.5
    assert ap.map == pytest.approx(np.mean(expected))


def test_aji_hand_case():
    # C = 3 + 4 + 0 ; U = |1 ∪ 5| (4) + |2 ∪ 6| (5) + |3| (2) + unused 7 (1) = 12
    assert aggregated_jaccard_index(TRUTH, PRED) == pytest.approx(7 / 12)
    # a prediction covering two truth objects is used twice (original AJI)
    t = np.array([1, 1, 2, 2])
    p = np.array([9, 9, 9, 9])
    # C = 2 + 2 ; U = 4 + 4
    assert aggregated_jaccard_index(t, p) == pytest.approx(0.5)


def test_pq_hand_case():
    pq = panoptic_quality(TRUTH, PRED)
    # TP = 2 (IoU 0.75, 0.8), FP = 1, FN = 1: SQ = 0.775, RQ = 2 / 3
    assert (pq.tp, pq.fp, pq.fn) == (2, 1, 1)
    assert pq.sq == pytest.approx(0.775)
    assert pq.rq == pytest.approx(2 / 3)
    assert pq.pq == pytest.approx(0.775 * 2 / 3)
    # IoU exactly 0.5 is not a PQ match (IoU > 0.5), but is one for matching at 0.5
    t = np.array([1, 1, 0])
    p = np.array([4, 0, 0])
    assert panoptic_quality(t, p).tp == 0
    assert panoptic_quality(t, p).pq == 0.0
    assert match_instances(t, p, threshold=0.5).tp == 1


def _brute_matching(t, p, threshold):
    """Maximum number of pairs, then summed IoU, over all one-to-one assignments."""
    ti = [int(i) for i in np.unique(t) if i]
    pi = [int(j) for j in np.unique(p) if j]
    iou = {}
    for i in ti:
        for j in pi:
            inter = np.sum((t == i) & (p == j))
            iou[i, j] = inter / np.sum((t == i) | (p == j))
    best = (0, 0.0)
    k = min(len(ti), len(pi))
    for r in range(k, 0, -1):
        for rows in itertools.combinations(ti, r):
            for cols in itertools.permutations(pi, r):
                vals = [iou[a, b] for a, b in zip(rows, cols, strict=True)]
                if all(v >= threshold and v > 0 for v in vals):
                    best = max(best, (r, sum(vals)))
        if best[0]:
            break
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
def test_matching_equals_enumeration(seed, threshold):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 5, size=(4, 5))
    p = rng.integers(0, 5, size=(4, 5))
    m = match_instances(t, p, threshold=threshold)
    n, s = _brute_matching(t, p, threshold)
    assert m.tp == n
    assert float(m.ious.sum()) == pytest.approx(s)


def test_coco_ap_hand_case():
    t = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 0])
    p = np.array([5, 5, 5, 5, 6, 6, 0, 0, 7, 7])
    # IoU(1,5) = 1, IoU(2,6) = 0.5; 7 is a false positive
    # scores: 7 (0.9) > 5 (0.8) > 6 (0.7)
    res = coco_average_precision(t, p, scores={5: 0.8, 6: 0.7, 7: 0.9}, thresholds=[0.5, 0.75])
    # at 0.5: hits [F, T, T]: recall [0, .5, 1], precision [0, .5, 2/3] -> monotone [2/3]*3
    # 101 recall points all reach precision 2/3
    assert res.ap[0] == pytest.approx(2 / 3)
    # at 0.75: hits [F, T, F]: recall [0, .5, .5], precision [0, .5, 1/3] -> [.5, .5, 1/3]
    # recall points 0..0.5 (51 of them) get 0.5, the rest 0
    assert res.ap[1] == pytest.approx(51 * 0.5 / 101)
    arr_scores = np.zeros(8)
    arr_scores[[5, 6, 7]] = [0.8, 0.7, 0.9]
    res2 = coco_average_precision(t, p, scores=arr_scores, thresholds=[0.5, 0.75])
    np.testing.assert_allclose(res2.ap, res.ap)
    with pytest.raises(EmsegValueError, match="score"):
        coco_average_precision(t, p, scores={5: 0.1})


def test_object_tables_hand_case():
    t = np.array([1, 1, 1, 1, 2, 2, 3, 3])
    p = np.array([5, 5, 6, 6, 7, 7, 7, 7])
    tabs = object_tables(t, p, min_fraction=0.1)
    tt = tabs.truth.set_index("label")
    assert tt.loc[1, "n_split"] == 2
    assert tt.loc[2, "n_split"] == 1
    assert tt.loc[2, "n_merged"] == 2
    assert tt.loc[1, "n_merged"] == 1
    assert tt.loc[2, "best_match"] == 7
    assert tt.loc[2, "best_iou"] == pytest.approx(0.5)
    assert tt.loc[1, "best_match"] == 5  # tie 5/6 at IoU 0.5 -> lowest label
    pt = tabs.prediction.set_index("label")
    assert pt.loc[7, "n_merged"] == 2
    assert pt.loc[5, "n_split"] == 2
    assert pt.loc[7, "size"] == 4


def test_instance_metrics_keys_and_edge_cases():
    m = instance_metrics(TRUTH, PRED)
    assert list(m) == list(INSTANCE_KEYS)
    assert list(m) == ["ap50", "ap75", "map", "aji", "pq", "sq", "rq", "f1_50", "coco_map",
                       "coco_ap50", "coco_ap75", "mitoem_ap75"]  # fmt: skip
    assert math.isnan(m["coco_map"])  # no scores
    assert m["f1_50"] == pytest.approx(2 / 3)
    empty = instance_metrics(np.zeros(4, np.uint8), np.zeros(4, np.uint8))
    assert all(math.isnan(v) for v in empty.values())
    with pytest.raises(EmsegValueError, match="threshold"):
        match_instances(TRUTH, PRED, threshold=0.0)


# --- COCO / MitoEM average precision ------------------------------------------------------


def _pycocotools_style_map(t, p, scores, thresholds):
    """An independent COCO AP written after pycocotools' COCOeval (evaluateImg + accumulate):
    IoUs by brute force over the voxel sets, detections by decreasing score (mergesort),
    each taking the unmatched ground truth of highest IoU >= t (ties: the later one, as
    pycocotools' ``<`` test), precision made monotone from the right, 101 recall points."""
    gts = [int(g) for g in np.unique(t) if g != 0]
    dts = [int(d) for d in np.unique(p) if d != 0]
    ious = np.zeros((len(dts), len(gts)))
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            inter = np.sum((p == d) & (t == g))
            union = np.sum((p == d) | (t == g))
            ious[i, j] = inter / union
    order = np.argsort([-scores[d] for d in dts], kind="mergesort")
    rec_thrs = np.linspace(0.0, 1.0, int(np.round((1.00 - 0.0) / 0.01)) + 1)
    aps = []
    for thr in thresholds:
        gtm = np.zeros(len(gts), dtype=bool)
        tps = []
        for dind in order:
            iou = min(thr, 1 - 1e-10)
            m = -1
            for gind in range(len(gts)):
                if gtm[gind]:
                    continue
                if ious[dind, gind] < iou:
                    continue
                iou = ious[dind, gind]
                m = gind
            if m > -1:
                gtm[m] = True
            tps.append(m > -1)
        tps = np.array(tps, dtype=bool)
        tp = np.cumsum(tps).astype(float)
        fp = np.cumsum(~tps).astype(float)
        rc = tp / len(gts)
        pr = (tp / (fp + tp + np.spacing(1))).tolist()
        for i in range(len(pr) - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        inds = np.searchsorted(rc, rec_thrs, side="left")
        q = np.zeros(len(rec_thrs))
        for ri, pi in enumerate(inds):
            if pi < len(pr):
                q[ri] = pr[pi]
        aps.append(q.mean())
    return np.array(aps)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coco_ap_equals_pycocotools_style_reference(seed):
    rng = np.random.default_rng(seed)
    t = np.repeat(np.repeat(rng.integers(0, 9, (3, 4, 4)), 3, axis=1), 3, axis=2)
    p = np.roll(t, rng.integers(0, 2), axis=2) * (rng.random(t.shape) > 0.1)
    p = np.where(rng.random(t.shape) < 0.1, rng.integers(20, 24, t.shape), p)
    ids = [int(d) for d in np.unique(p) if d != 0]
    scores = {d: float(rng.choice([0.3, 0.5, 0.9])) for d in ids}  # ties on purpose
    th = np.round(np.arange(0.5, 0.951, 0.05), 2)
    ref = _pycocotools_style_map(t, p, scores, th)
    assert 0 < ref.mean() < 1  # a case with hits and misses
    got = coco_average_precision(t, p, scores=scores)
    np.testing.assert_allclose(got.ap, ref, atol=1e-12)
    assert got.map == pytest.approx(ref.mean(), abs=1e-12)
    m = instance_metrics(t, p, scores=scores)
    assert m["coco_map"] == pytest.approx(ref.mean(), abs=1e-12)
    assert m["coco_ap50"] == pytest.approx(ref[0], abs=1e-12)
    assert m["coco_ap75"] == pytest.approx(ref[5], abs=1e-12)
    assert m["mitoem_ap75"] == pytest.approx(ref[5], abs=1e-12)


def test_mitoem_ap75_hand_case_3d():
    # two truth mitochondria of 16 voxels (rows 0-1 and 2-3 of a 2 x 4 x 4 volume)
    t = np.zeros((2, 4, 4), np.uint8)
    t[:, :2] = 1
    t[:, 2:] = 2
    p = t.copy()
    p[:, 3] = 0  # prediction 2 covers half of object 2: IoU 0.5 < 0.75
    p[0, 0, 0] = 3  # a one-voxel false positive (IoU 1/16 with object 1)
    # ranked by size: 1 (15 voxels, IoU 15/16 -> hit), 2 (8, miss), 3 (1, miss)
    # recall [.5, .5, .5], precision [1, .5, 1/3] -> monotone [1, .5, 1/3]
    # recall points 0..0.5 (51 of 101) read precision 1, the rest 0
    assert mitoem_average_precision(t, p) == pytest.approx(51 / 101)
    # scores that put the misses first: precision at the hit is 1/3
    got = mitoem_average_precision(t, p, scores={1: 0.1, 2: 0.9, 3: 0.8})
    assert got == pytest.approx(51 / 101 / 3)
    # at IoU 0.5 both truth objects are found (by size order: hit, hit, miss)
    assert mitoem_average_precision(t, p, threshold=0.5) == pytest.approx(1.0)
    assert math.isnan(mitoem_average_precision(np.zeros_like(t), p))
    # blockwise-exact: the table of two halves gives the same value
    from emseg.metrics import merge_tables, overlap_table

    tab = merge_tables([overlap_table(t[:1], p[:1]), overlap_table(t[1:], p[1:])])
    assert mitoem_average_precision(tab) == pytest.approx(51 / 101)
