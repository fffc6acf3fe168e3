"""Confusion matrix, per-class scores, pixel error and Jaccard curve."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score, precision_recall_fscore_support

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.metrics import (
    class_scores,
    confusion_matrix,
    jaccard_curve,
    pixel_error,
    probability_histogram,
    semantic_metrics,
)


def test_binary_hand_case():
    truth = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=np.uint8)
    pred = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], dtype=np.uint8)
    # TP = 2, FN = 1, FP = 2, TN = 3
    m = semantic_metrics(truth, pred)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 5)
    assert m["dice"] == pytest.approx(4 / 7)
    assert m["jaccard"] == pytest.approx(2 / 5)
    assert m["conformity"] == pytest.approx(1 - 3 / 2)
    assert math.isnan(m["pixel_error"])
    assert set(m) == {"accuracy", "precision", "recall", "specificity", "dice", "jaccard",
                      "conformity", "pixel_error"}  # fmt: skip


def test_binary_uses_every_nonzero_class_as_foreground():
    m = semantic_metrics(np.array([0, 255, 255]), np.array([0, 1, 2]))
    assert m["dice"] == 1.0
    assert m["accuracy"] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 4, size=(5, 7, 9))
    p = np.where(rng.random(t.shape) < 0.6, t, rng.integers(0, 4, size=t.shape))
    cm = confusion_matrix(t, p)
    np.testing.assert_array_equal(cm.matrix, sk_confusion(t.ravel(), p.ravel()))
    cs = class_scores(cm)
    prec, rec, f1, _ = precision_recall_fscore_support(t.ravel(), p.ravel(), zero_division=np.nan)
    np.testing.assert_allclose(cs.precision, prec)
    np.testing.assert_allclose(cs.recall, rec)
    np.testing.assert_allclose(cs.f1, f1)
    np.testing.assert_allclose(cs.jaccard, jaccard_score(t.ravel(), p.ravel(), average=None))
    for avg in ("macro", "micro"):
        ref = precision_recall_fscore_support(t.ravel(), p.ravel(), average=avg)
        got = semantic_metrics(t, p, average=avg)
        assert (got["precision"], got["recall"], got["dice"]) == pytest.approx(ref[:3])
        assert got["jaccard"] == pytest.approx(jaccard_score(t.ravel(), p.ravel(), average=avg))
    # specificity of class k = TN / (TN + FP), by hand from the matrix
    m = cm.matrix
    for k in range(4):
        fp = m[:, k].sum() - m[k, k]
        tn = m.sum() - m[k, :].sum() - m[:, k].sum() + m[k, k]
        assert cs.specificity[k] == pytest.approx(tn / (tn + fp))


def test_confusion_options_and_merge(rng):
    t = rng.integers(0, 3, size=200)
    p = rng.integers(0, 3, size=200)
    full = confusion_matrix(t, p, n_classes=4)
    assert full.matrix.shape == (4, 4)
    assert full.matrix[3].sum() == 0
    only = confusion_matrix(t, p, labels=[0, 2])
    keep = np.isin(t, [0, 2]) & np.isin(p, [0, 2])
    np.testing.assert_array_equal(only.matrix, sk_confusion(t[keep], p[keep], labels=[0, 2]))
    merged = confusion_matrix(t[:70], p[:70]) + confusion_matrix(t[70:], p[70:], labels=[1, 2])
    whole = confusion_matrix(t, p)
    # second part drops class-0 voxels, so compare with the same rule
    keep2 = np.ones(200, bool)
    keep2[70:] = np.isin(t[70:], [1, 2]) & np.isin(p[70:], [1, 2])
    np.testing.assert_array_equal(merged.matrix, sk_confusion(t[keep2], p[keep2]))
    assert whole.n_voxels == 200
    with pytest.raises(EmsegValueError, match="n_classes"):
        confusion_matrix(t, p, n_classes=2)
    with pytest.raises(EmsegValueError, match="not both"):
        confusion_matrix(t, p, n_classes=3, labels=[0])


def test_zero_division():
    # a class never present and never predicted: precision 0/0
    cm = confusion_matrix(np.array([0, 0]), np.array([0, 0]), n_classes=2)
    cs = class_scores(cm)
    assert math.isnan(cs.precision[1])
    assert math.isnan(cs.conformity[1])
    assert class_scores(cm, zero_division=1.0).precision[1] == 1.0
    assert class_scores(cm, zero_division=1.0).conformity[1] == 1.0
    assert cs.macro["precision"] == 1.0  # NaN class left out of the macro mean


def _brute_f(truth, prob, th):
    fg = truth != 0
    out = []
    for t in th:
        pr = prob > t
        tp = np.sum(fg & pr)
        fp = np.sum(~fg & pr)
        fn = np.sum(fg & ~pr)
        out.append((tp, fp, fn))
    return np.array(out, dtype=float)


def test_pixel_error_and_jaccard_curve_against_brute_force(rng):
    truth = (rng.random((4, 16, 16)) > 0.6).astype(np.uint8) * 255
    prob = np.clip(0.5 * (truth / 255.0) + 0.6 * rng.random(truth.shape), 0, 1)
    prob[0, 0, :4] = [0.1, 0.2, 0.30000000000000004, 1.0]  # values on / next to thresholds
    th = np.round(np.arange(11) / 10, 10)
    c = _brute_f(truth, prob, th)
    f = 2 * c[:, 0] / (2 * c[:, 0] + c[:, 1] + c[:, 2])
    pe = pixel_error(truth, prob)
    np.testing.assert_allclose(pe.f_scores, f)
    assert pe.pixel_error == pytest.approx(1 - f.max())
    assert pe.best_threshold == th[np.argmax(f)]
    curve = jaccard_curve(truth, prob)
    th2 = np.linspace(0, 1, 101)
    c2 = _brute_f(truth, prob, th2)
    j = c2[:, 0] / c2.sum(axis=1)
    j[~np.isfinite(j)] = np.nan
    np.testing.assert_allclose(curve.jaccard, j)
    assert curve.area == pytest.approx(np.trapezoid(j, th2))
    # the histogram adds up over blocks
    h = probability_histogram(truth[:2], prob[:2], thresholds=th) + probability_histogram(
        truth[2:], prob[2:], thresholds=th
    )
    assert pixel_error(h).pixel_error == pe.pixel_error
    # semantic_metrics takes the probability map too
    assert semantic_metrics(truth, prob > 0.5, probabilities=prob)["pixel_error"] == pe.pixel_error


def test_pixel_validation(rng):
    t = np.zeros((3, 3), np.uint8)
    with pytest.raises(EmsegTypeError, match="/ 255"):
        pixel_error(t, np.zeros((3, 3), np.uint8))
    with pytest.raises(EmsegValueError, match="increasing"):
        pixel_error(t, np.zeros((3, 3)), thresholds=[0.5, 0.2])
    with pytest.raises(EmsegValueError, match="average"):
        semantic_metrics(t, t, average="weighted")  # type: ignore[arg-type]
    # no foreground anywhere: every F is 0/0
    assert math.isnan(pixel_error(t, np.zeros((3, 3))).pixel_error)
