"""Semantic (per-voxel) metrics from a confusion matrix or a probability histogram.

Both tables add up exactly across blocks (:meth:`ConfusionMatrix.merge`,
:meth:`ProbabilityHistogram.merge`), so every score here is exact out of core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from emseg._checks import check_choice, check_same_shape
from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.metrics._tables import overlap_table

__all__ = [
    "ClassScores",
    "ConfusionMatrix",
    "JaccardCurve",
    "PixelError",
    "ProbabilityHistogram",
    "class_scores",
    "confusion_matrix",
    "jaccard_curve",
    "pixel_error",
    "probability_histogram",
    "semantic_metrics",
]

ISBI_THRESHOLDS = np.round(np.arange(11) / 10.0, 10)
"""The thresholds of the ISBI 2012 scripts: 0.0, 0.1, ..., 1.0."""

CURVE_THRESHOLDS = np.linspace(0.0, 1.0, 101)

_CHUNK = 1 << 22


def _div(num: Any, den: Any, zero_division: float) -> Any:
    """num / den elementwise; `zero_division` where den == 0 (num is then 0 too)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    ok = den != 0
    np.divide(num, den, out=out, where=ok)
    return out if out.ndim else float(out)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


@dataclass(frozen=True, eq=False)
class ConfusionMatrix:
    """Voxel counts of (truth class, predicted class).

    Attributes
    ----------
    labels : (C,) ndarray of uint64
        The class values, increasing.
    matrix : (C, C) ndarray of int64
        ``matrix[i, j]`` = voxels of truth class ``labels[i]`` predicted as ``labels[j]``.
    """

    labels: np.ndarray
    matrix: np.ndarray

    def __post_init__(self) -> None:
        lab = np.asarray(self.labels, dtype=np.uint64)
        mat = np.asarray(self.matrix, dtype=np.int64)
        if mat.shape != (lab.size, lab.size):
            raise EmsegValueError(
                f"`matrix` must have shape ({lab.size}, {lab.size}) for {lab.size} labels; "
                f"got {mat.shape}."
            )
        lab.setflags(write=False)
        mat.setflags(write=False)
        object.__setattr__(self, "labels", lab)
        object.__setattr__(self, "matrix", mat)

    @property
    def n_voxels(self) -> int:
        return int(self.matrix.sum())

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Return the matrix of the union of two disjoint voxel sets (exact)."""
        labels = np.union1d(self.labels, other.labels)
        mat = np.zeros((labels.size, labels.size), np.int64)
        for cm in (self, other):
            idx = np.searchsorted(labels, cm.labels)
            mat[np.ix_(idx, idx)] += cm.matrix
        return ConfusionMatrix(labels, mat)

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)


def confusion_matrix(
    truth: ArrayLike,
    prediction: ArrayLike,
    *,
    n_classes: int | None = None,
    labels: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> ConfusionMatrix:
    """Count voxels per (truth class, predicted class).

    Parameters
    ----------
    truth, prediction : (Z, Y, X) or (Y, X) ndarray of int
        Class maps of the same shape.
    n_classes : int, optional
        Classes are ``0 .. n_classes - 1``; another value raises.
    labels : sequence of int, optional
        The classes to count; voxels whose truth or predicted class is not
        listed are left out (as in scikit-learn). Excludes `n_classes`.
    mask : ndarray of bool, optional
        Only voxels where `mask` is true are counted.

    Returns
    -------
    ConfusionMatrix
        Rows are truth, columns prediction. Without `n_classes` and `labels`
        the classes are those present in either map.

    Examples
    --------
    >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), n_classes=2).matrix
    array([[1, 0],
           [1, 1]])
    """
    if n_classes is not None and labels is not None:
        raise EmsegValueError("give `n_classes` or `labels`, not both.")
    tab = overlap_table(truth, prediction, mask=mask)
    if n_classes is not None:
        if int(n_classes) < 1:
            raise EmsegValueError(f"`n_classes` must be >= 1; got {n_classes}.")
        lab = np.arange(int(n_classes), dtype=np.uint64)
        top = max(int(tab.truth_ids.max(initial=0)), int(tab.pred_ids.max(initial=0)))
        if len(tab) and top >= n_classes:
            raise EmsegValueError(
                f"`n_classes` is {n_classes} but the maps hold class {top}; "
                "raise `n_classes` or pass `labels`."
            )
    elif labels is not None:
        lab = np.unique(np.asarray(labels).astype(np.uint64))
    else:
        lab = np.union1d(tab.truth_ids, tab.pred_ids)
    keep = np.isin(tab.truth_ids, lab) & np.isin(tab.pred_ids, lab)
    ti = np.searchsorted(lab, tab.truth_ids[keep])
    pi = np.searchsorted(lab, tab.pred_ids[keep])
    mat = np.zeros((lab.size, lab.size), np.int64)
    np.add.at(mat, (ti, pi), tab.counts[keep])
    return ConfusionMatrix(lab, mat)


@dataclass(frozen=True, eq=False)
class ClassScores:
    """Per-class scores of a confusion matrix, with macro and micro averages.

    Attributes
    ----------
    labels : (C,) ndarray of uint64
    tp, fp, fn, tn : (C,) ndarray of int64
        One-vs-rest voxel counts per class.
    precision, recall, specificity, f1, jaccard, conformity : (C,) ndarray of float64
        Per class; ``f1`` equals the Dice coefficient, ``recall`` the sensitivity.
    accuracy : float
        Fraction of voxels whose class is right.
    macro, micro : dict of str to float
        Unweighted mean over classes (NaN entries left out), and the score of
        the summed counts (for single-label data micro precision = recall =
        f1 = accuracy).
    """

    labels: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    specificity: np.ndarray
    f1: np.ndarray
    jaccard: np.ndarray
    conformity: np.ndarray
    accuracy: float
    macro: dict[str, float]
    micro: dict[str, float]


_SCORE_NAMES = ("precision", "recall", "specificity", "f1", "jaccard", "conformity")


def _scores(tp: Any, fp: Any, fn: Any, tn: Any, zero_division: float) -> dict[str, Any]:
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn, tn))
    conformity = 1.0 - _div(fp + fn, tp, float("nan"))
    if zero_division == zero_division:  # not NaN: only the 0/0 case takes it
        conformity = np.where((tp == 0) & (fp + fn == 0), zero_division, conformity)
    return {
        "precision": _div(tp, tp + fp, zero_division),
        "recall": _div(tp, tp + fn, zero_division),
        "specificity": _div(tn, tn + fp, zero_division),
        "f1": _div(2 * tp, 2 * tp + fp + fn, zero_division),
        "jaccard": _div(tp, tp + fp + fn, zero_division),
        "conformity": conformity,
    }


def class_scores(cm: ConfusionMatrix, *, zero_division: float = float("nan")) -> ClassScores:
    """Per-class precision, recall, specificity, F1 (= Dice), Jaccard (= IoU), conformity.

    Parameters
    ----------
    cm : ConfusionMatrix
    zero_division : float, default NaN
        Value of a score whose denominator is 0 (e.g. precision of a class
        that is never predicted and never present). Conformity
        ``1 - (FP + FN) / TP`` is NaN whenever TP = 0 (it is then undefined
        or minus infinity); `zero_division` replaces only its 0/0 case.

    Returns
    -------
    ClassScores
    """
    m = cm.matrix
    tp = np.diag(m).copy()
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    tn = m.sum() - tp - fp - fn
    per = _scores(tp, fp, fn, tn, zero_division)
    per = {k: np.atleast_1d(v).astype(np.float64) for k, v in per.items()}
    macro = {k: _nanmean(per[k]) for k in _SCORE_NAMES}
    micro_raw = _scores(tp.sum(), fp.sum(), fn.sum(), tn.sum(), zero_division)
    micro = {k: float(micro_raw[k]) for k in _SCORE_NAMES}
    accuracy = _div(tp.sum(), m.sum(), zero_division)
    return ClassScores(cm.labels, tp, fp, fn, tn, **per, accuracy=float(accuracy), macro=macro,
                       micro=micro)  # fmt: skip


@dataclass(frozen=True, eq=False)
class ProbabilityHistogram:
    """Counts of foreground and background voxels between consecutive thresholds.

    Attributes
    ----------
    thresholds : (K,) ndarray of float64
        Increasing thresholds; a voxel is predicted foreground at threshold
        ``t`` when its probability is > ``t``.
    foreground, background : (K + 1,) ndarray of int64
        Voxels of truth foreground / background whose probability exceeds
        exactly ``b`` thresholds, for ``b = 0 .. K``.
    """

    thresholds: np.ndarray
    foreground: np.ndarray
    background: np.ndarray

    def merge(self, other: ProbabilityHistogram) -> ProbabilityHistogram:
        """Return the histogram of the union of two disjoint voxel sets (exact)."""
        if not np.array_equal(self.thresholds, other.thresholds):
            raise EmsegValueError("histograms must share `thresholds` to be merged.")
        return ProbabilityHistogram(
            self.thresholds, self.foreground + other.foreground, self.background + other.background
        )

    def __add__(self, other: ProbabilityHistogram) -> ProbabilityHistogram:
        return self.merge(other)

    def counts(self) -> dict[str, np.ndarray]:
        """Return TP, FP, FN, TN (each (K,) int64) at every threshold."""
        # voxels above threshold k are those in bins k + 1 .. K
        fg_above = np.cumsum(self.foreground[::-1])[::-1][1:]
        bg_above = np.cumsum(self.background[::-1])[::-1][1:]
        return {
            "tp": fg_above,
            "fp": bg_above,
            "fn": self.foreground.sum() - fg_above,
            "tn": self.background.sum() - bg_above,
        }


def _check_thresholds(thresholds: ArrayLike) -> np.ndarray:
    th = np.asarray(thresholds, dtype=np.float64).ravel()
    if th.size == 0 or np.any(np.diff(th) <= 0) or not np.all(np.isfinite(th)):
        raise EmsegValueError(
            f"`thresholds` must be finite and strictly increasing; got {th.tolist()}."
        )
    return th


def probability_histogram(
    truth: ArrayLike,
    probabilities: ArrayLike,
    *,
    thresholds: ArrayLike = CURVE_THRESHOLDS,
    mask: ArrayLike | None = None,
) -> ProbabilityHistogram:
    """Histogram of foreground probabilities split by truth class (additive across blocks).

    Parameters
    ----------
    truth : (Z, Y, X) or (Y, X) ndarray of int or bool
        Nonzero = foreground.
    probabilities : ndarray of float, same shape
        Foreground probability in [0, 1]. Integer maps are refused (never
        rescaled implicitly): divide by 255 first.
    thresholds : (K,) sequence of float, default 0.00, 0.01, ..., 1.00
    mask : ndarray of bool, optional
        Only voxels where `mask` is true are counted.

    Returns
    -------
    ProbabilityHistogram
    """
    t = np.asarray(truth)
    pr = np.asarray(probabilities)
    check_same_shape(t, pr, names=("truth", "probabilities"))
    if not np.issubdtype(pr.dtype, np.floating):
        raise EmsegTypeError(
            f"`probabilities` must be floats in [0, 1]; got dtype {pr.dtype}. "
            "Scale it explicitly, e.g. probabilities / 255.0."
        )
    th = _check_thresholds(thresholds)
    tf, pf = np.ravel(t), np.ravel(pr)
    mf = None
    if mask is not None:
        m = np.asarray(mask)
        check_same_shape(t, m, names=("truth", "mask"))
        mf = np.ravel(m.astype(bool, copy=False))
    fg = np.zeros(th.size + 1, np.int64)
    bg = np.zeros(th.size + 1, np.int64)
    for s in range(0, tf.size, _CHUNK):
        sl = slice(s, s + _CHUNK)
        bins = np.searchsorted(th, pf[sl], side="left")
        is_fg = tf[sl] != 0
        if mf is not None:
            keep = mf[sl]
            bins, is_fg = bins[keep], is_fg[keep]
        fg += np.bincount(bins[is_fg], minlength=th.size + 1)
        bg += np.bincount(bins[~is_fg], minlength=th.size + 1)
    return ProbabilityHistogram(th, fg, bg)


@dataclass(frozen=True, eq=False)
class PixelError:
    """ISBI 2012 pixel error: ``1 - max over thresholds of the foreground F-score``.

    Attributes
    ----------
    pixel_error : float
    best_threshold : float
        The first threshold that reaches the maximal F-score.
    thresholds, f_scores : (K,) ndarray of float64
    """

    pixel_error: float
    best_threshold: float
    thresholds: np.ndarray
    f_scores: np.ndarray


def pixel_error(
    truth: ArrayLike | ProbabilityHistogram,
    probabilities: ArrayLike | None = None,
    *,
    thresholds: ArrayLike = ISBI_THRESHOLDS,
    mask: ArrayLike | None = None,
) -> PixelError:
    """ISBI 2012 pixel error (1 - maximal F-score of foreground restoration).

    Parameters
    ----------
    truth : ndarray of int or bool, or ProbabilityHistogram
        Nonzero = foreground (in ISBI 2012 the cell interior, 255). A
        histogram may be given instead of arrays (then leave out
        `probabilities`, `thresholds` and `mask`).
    probabilities : ndarray of float, same shape
        Foreground probability in [0, 1].
    thresholds : sequence of float, default 0.0, 0.1, ..., 1.0 (as the ISBI scripts)
    mask : ndarray of bool, optional

    Returns
    -------
    PixelError
        F = 2 TP / (2 TP + FP + FN) at each threshold; a threshold where
        2 TP + FP + FN = 0 (no foreground anywhere) has F = NaN, and the
        pixel error is NaN when every F is NaN.
    """
    hist = _as_histogram(truth, probabilities, thresholds, mask)
    c = hist.counts()
    f = _div(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"], float("nan"))
    f = np.atleast_1d(f)
    if np.all(np.isnan(f)):
        return PixelError(float("nan"), float("nan"), hist.thresholds, f)
    k = int(np.nanargmax(f))
    return PixelError(1.0 - float(f[k]), float(hist.thresholds[k]), hist.thresholds, f)


@dataclass(frozen=True, eq=False)
class JaccardCurve:
    """Jaccard index (IoU) of the thresholded probability map, per threshold.

    Attributes
    ----------
    thresholds, jaccard : (K,) ndarray of float64
    area : float
        Trapezoidal integral of the curve over the thresholds (in [0, 1] for
        the default grid 0..1); NaN when a point is NaN.
    """

    thresholds: np.ndarray
    jaccard: np.ndarray
    area: float


def jaccard_curve(
    truth: ArrayLike | ProbabilityHistogram,
    probabilities: ArrayLike | None = None,
    *,
    thresholds: ArrayLike = CURVE_THRESHOLDS,
    mask: ArrayLike | None = None,
) -> JaccardCurve:
    """Jaccard = TP / (TP + FP + FN) of ``probabilities > t`` against ``truth != 0`` for each t.

    Parameters are as for :func:`pixel_error`; the default thresholds are
    0.00, 0.01, ..., 1.00. A threshold where TP + FP + FN = 0 gives NaN.

    Returns
    -------
    JaccardCurve
    """
    hist = _as_histogram(truth, probabilities, thresholds, mask)
    c = hist.counts()
    j = np.atleast_1d(_div(c["tp"], c["tp"] + c["fp"] + c["fn"], float("nan")))
    if j.size < 2:
        area = float("nan")
    else:
        area = float(np.sum((j[1:] + j[:-1]) * np.diff(hist.thresholds)) / 2.0)
    return JaccardCurve(hist.thresholds, j, area)


def _as_histogram(
    truth: Any, probabilities: Any, thresholds: Any, mask: Any
) -> ProbabilityHistogram:
    if isinstance(truth, ProbabilityHistogram):
        if probabilities is not None or mask is not None:
            raise EmsegValueError(
                "with a ProbabilityHistogram as first argument leave out `probabilities` and `mask`."
            )
        return truth
    if probabilities is None:
        raise EmsegValueError("`probabilities` is required when `truth` is an array.")
    return probability_histogram(truth, probabilities, thresholds=thresholds, mask=mask)


def semantic_metrics(
    truth: ArrayLike | ConfusionMatrix,
    prediction: ArrayLike | None = None,
    *,
    average: Literal["binary", "macro", "micro"] = "binary",
    probabilities: ArrayLike | ProbabilityHistogram | None = None,
    mask: ArrayLike | None = None,
    zero_division: float = float("nan"),
) -> dict[str, float]:
    """The semantic scores under the ``emseg evaluate --json`` names.

    Parameters
    ----------
    truth, prediction : ndarray of int, or a ConfusionMatrix as `truth` alone
    average : {"binary", "macro", "micro"}
        ``"binary"``: foreground = every nonzero class, background = 0.
        ``"macro"``: unweighted mean of the per-class scores over all classes
        (NaN classes left out). ``"micro"``: scores of the summed one-vs-rest
        counts.
    probabilities : ndarray of float or ProbabilityHistogram, optional
        Foreground probability map for ``pixel_error`` (NaN when not given).
    mask : ndarray of bool, optional
    zero_division : float, default NaN

    Returns
    -------
    dict of str to float
        Keys ``accuracy, precision, recall, specificity, dice, jaccard,
        conformity, pixel_error``.
    """
    check_choice(average, ("binary", "macro", "micro"), name="average")
    if isinstance(truth, ConfusionMatrix):
        if prediction is not None:
            raise EmsegValueError(
                "with a ConfusionMatrix as first argument leave out `prediction`."
            )
        cm = truth
    else:
        if prediction is None:
            raise EmsegValueError("`prediction` is required when `truth` is an array.")
        cm = confusion_matrix(truth, prediction, mask=mask)
    if average == "binary":
        fg = cm.labels != 0
        m = cm.matrix
        tp, fp = m[np.ix_(fg, fg)].sum(), m[np.ix_(~fg, fg)].sum()
        fn, tn = m[np.ix_(fg, ~fg)].sum(), m[np.ix_(~fg, ~fg)].sum()
        s = {k: float(v) for k, v in _scores(tp, fp, fn, tn, zero_division).items()}
        accuracy = float(_div(tp + tn, m.sum(), zero_division))
    else:
        cs = class_scores(cm, zero_division=zero_division)
        s = cs.macro if average == "macro" else cs.micro
        accuracy = cs.accuracy
    out = {
        "accuracy": accuracy,
        "precision": s["precision"],
        "recall": s["recall"],
        "specificity": s["specificity"],
        "dice": s["f1"],
        "jaccard": s["jaccard"],
        "conformity": s["conformity"],
        "pixel_error": float("nan"),
    }
    if probabilities is not None:
        if isinstance(probabilities, ProbabilityHistogram):
            out["pixel_error"] = pixel_error(probabilities).pixel_error
        else:
            if isinstance(truth, ConfusionMatrix):
                raise EmsegValueError(
                    "with a ConfusionMatrix, pass `probabilities` as a ProbabilityHistogram."
                )
            out["pixel_error"] = pixel_error(truth, probabilities, mask=mask).pixel_error
    return out
