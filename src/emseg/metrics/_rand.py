"""Rand index and the adapted Rand error (CREMI, ISBI 2012 and scikit-image variants).

All are functions of the :class:`~emseg.metrics.OverlapTable`; sums of squares
are exact integers, so results do not depend on how a volume was blocked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from emseg._checks import check_choice
from emseg.errors import EmsegValueError
from emseg.metrics._tables import OverlapTable, overlap_table

__all__ = ["AdaptedRand", "RandIndex", "adapted_rand_error", "rand_index"]

ARAND_VARIANTS = ("cremi", "isbi2012", "skimage")


def as_table(truth: Any, prediction: Any, mask: Any) -> OverlapTable:
    """Return `truth` when it is a table, else the table of (truth, prediction)."""
    if isinstance(truth, OverlapTable):
        if prediction is not None or mask is not None:
            raise EmsegValueError(
                "with an OverlapTable as first argument leave out `prediction` and `mask`."
            )
        return truth
    if prediction is None:
        raise EmsegValueError(
            "`prediction` is required when `truth` is an array (or pass an OverlapTable)."
        )
    return overlap_table(truth, prediction, mask=mask)


def sum_squares(x: np.ndarray) -> int:
    """Exact sum of squares of non-negative int64 counts, as a Python int."""
    if x.size == 0:
        return 0
    if int(x.max()) * int(x.sum()) < 2**62:
        return int(np.dot(x, x))
    return sum(int(v) * int(v) for v in x)


def _ratio(num: int | float, den: int | float, zero_division: float) -> float:
    return float(num) / float(den) if den != 0 else float(zero_division)


@dataclass(frozen=True)
class RandIndex:
    """Rand index over all unordered voxel pairs.

    Attributes
    ----------
    rand_index : float
        Fraction of pairs on which truth and prediction agree (same segment
        in both, or different segments in both).
    rand_error : float
        ``1 - rand_index``.
    n_pairs, same_both, same_truth, same_prediction : int
        Number of pairs in total, in one segment in both, in the truth, in the
        prediction (exact integers).
    """

    rand_index: float
    rand_error: float
    n_pairs: int
    same_both: int
    same_truth: int
    same_prediction: int


def rand_index(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    ignore_truth: Sequence[int] = (),
    mask: ArrayLike | None = None,
    zero_division: float = float("nan"),
) -> RandIndex:
    """Rand index and Rand error (Rand 1971), symmetric in truth and prediction.

    Parameters
    ----------
    truth : ndarray of int, or OverlapTable
        Ground-truth labels, or a table (then leave out `prediction`, `mask`).
    prediction : ndarray of int, same shape as `truth`
    ignore_truth : sequence of int, default ()
        Voxels with these truth labels are left out. By default every voxel
        counts and label 0 is an ordinary segment (as scikit-learn's
        ``rand_score``).
    mask : ndarray of bool, optional
    zero_division : float, default NaN
        Returned when fewer than 2 voxels remain (no pairs).

    Returns
    -------
    RandIndex

    Examples
    --------
    >>> rand_index(np.array([1, 1, 2]), np.array([1, 1, 1])).rand_index  # 1 of 3 pairs wrong
    0.6666666666666666
    """
    tab = as_table(truth, prediction, mask).without(truth=ignore_truth)
    n = tab.n_voxels
    sp = sum_squares(tab.counts)
    st = sum_squares(tab.truth_sizes()[1])
    sq = sum_squares(tab.pred_sizes()[1])
    n_pairs = n * (n - 1) // 2
    same_both, same_t, same_p = (sp - n) // 2, (st - n) // 2, (sq - n) // 2
    disagree = same_t + same_p - 2 * same_both
    if n_pairs == 0:
        ri = err = float(zero_division)
    else:
        err = disagree / n_pairs
        ri = 1.0 - err
    return RandIndex(ri, err, n_pairs, same_both, same_t, same_p)


@dataclass(frozen=True)
class AdaptedRand:
    """Adapted Rand error with its precision and recall.

    Attributes
    ----------
    error : float
        ``1 - f_score``.
    f_score : float
        Harmonic mean of precision and recall (the ISBI 2012 V_rand score for
        the ``"isbi2012"`` variant).
    precision : float
        Pairs joined in both / pairs joined in the prediction: the *merge*
        score (low when the prediction merges truth segments).
    recall : float
        Pairs joined in both / pairs joined in the truth: the *split* score
        (low when the prediction splits truth segments).
    variant : str
    """

    error: float
    f_score: float
    precision: float
    recall: float
    variant: str


def adapted_rand_error(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    variant: Literal["cremi", "isbi2012", "skimage"] = "cremi",
    ignore_truth: Sequence[int] | None = None,
    mask: ArrayLike | None = None,
    zero_division: float = float("nan"),
) -> AdaptedRand:
    """Adapted Rand error: 1 - F-score of the pair precision and recall.

    Parameters
    ----------
    truth : ndarray of int, or OverlapTable
        Ground-truth labels (0 = unlabelled), or a table.
    prediction : ndarray of int, same shape as `truth`
    variant : {"cremi", "isbi2012", "skimage"}
        Which reference implementation to reproduce exactly (with ``p`` the
        table without truth label 0, ``a`` its row sums, ``b`` its column sums
        without predicted label 0, ``c`` the voxels of truth != 0 predicted 0,
        ``n`` the number of voxels):

        * ``"cremi"`` — CREMI / SNEMI3D python (``cremi.evaluation.rand``):
          predicted 0 voxels count as singletons, but that term is ``c / n``
          with ``n`` all voxels (truth 0 included);
          ``P = (Σp² + c/n) / (Σb² + c/n)``, ``R = (Σp² + c/n) / Σa²``.
        * ``"isbi2012"`` — Fiji's foreground-restricted Rand score (ISBI 2012
          V_rand, ``RandError.foregroundRestrictedStatsN2``): predicted 0
          voxels are true singletons, ``P = (Σp² + c) / (Σb² + c)``,
          ``R = (Σp² + c) / Σa²``.
        * ``"skimage"`` — ``skimage.metrics.adapted_rand_error``: voxels with a
          truth label in `ignore_truth` (default ``(0,)``) are left out,
          predicted 0 is an ordinary segment, and self-pairs are excluded:
          ``P = (Σp² - N) / (Σb² - N)``, ``R = (Σp² - N) / (Σa² - N)`` with
          ``N`` the voxels kept. scikit-image returns these two as
          ``(are, recall, precision)`` in our naming: its second value is
          normalised by the truth.

    ignore_truth : sequence of int, optional
        Only for ``"skimage"``; the other variants fix the background at 0.
    mask : ndarray of bool, optional
    zero_division : float, default NaN
        Returned for a ratio whose denominator is 0 (e.g. no truth voxel
        with a nonzero label).

    Returns
    -------
    AdaptedRand
        ``f_score = 2 P R / (P + R)`` computed as ``2 Σ / (A + B)``, so it is
        0 (not NaN) when no pair is joined in both.
    """
    check_choice(variant, ARAND_VARIANTS, name="variant")
    tab = as_table(truth, prediction, mask)
    if variant != "skimage" and ignore_truth is not None:
        raise EmsegValueError(
            f"`ignore_truth` applies only to variant='skimage'; variant {variant!r} always "
            "treats truth label 0 as unlabelled. Use a mask to leave out other voxels."
        )
    if variant == "skimage":
        kept = tab.without(truth=(0,) if ignore_truth is None else ignore_truth)
        nk = kept.n_voxels
        s_ab = sum_squares(kept.counts) - nk
        s_a = sum_squares(kept.truth_sizes()[1]) - nk
        s_b = sum_squares(kept.pred_sizes()[1]) - nk
        num_ab, den_a, den_b = float(s_ab), float(s_a), float(s_b)
    else:
        n = tab.n_voxels
        fg = tab.without(truth=(0,))
        a = fg.truth_sizes()[1]
        inner = fg.without(prediction=(0,))
        c = fg.n_voxels - inner.n_voxels
        singles = c / n if variant == "cremi" and n else float(c)
        num_ab = sum_squares(inner.counts) + singles
        den_b = sum_squares(inner.pred_sizes()[1]) + singles
        den_a = float(sum_squares(a))
    precision = _ratio(num_ab, den_b, zero_division)
    recall = _ratio(num_ab, den_a, zero_division)
    f = _ratio(2.0 * num_ab, den_a + den_b, zero_division)
    return AdaptedRand(1.0 - f, f, precision, recall, variant)
