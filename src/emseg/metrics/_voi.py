"""Variation of information (split / merge, in bits) and the ISBI 2012 V_info score.

Entropies are computed from the :class:`~emseg.metrics.OverlapTable` as
``H = log2(n) - Σ c log2(c) / n`` with correctly rounded sums (``math.fsum``),
so the result does not depend on the order of labels or blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from emseg.metrics._rand import as_table
from emseg.metrics._tables import OverlapTable

__all__ = ["InformationScores", "VariationOfInformation", "isbi_information_scores", "voi"]


def _sum_xlogx(x: np.ndarray, log: np.ufunc = np.log2) -> float:
    """Σ x log(x) over positive counts, correctly rounded."""
    if x.size == 0:
        return 0.0
    xf = x.astype(np.float64)
    return math.fsum(xf * log(xf))


@dataclass(frozen=True)
class VariationOfInformation:
    """Variation of information split into its two conditional entropies (bits).

    Attributes
    ----------
    split : float
        H(prediction | truth): over-segmentation (false splits).
    merge : float
        H(truth | prediction): under-segmentation (false merges).
    total : float
        ``split + merge``.
    """

    split: float
    merge: float
    total: float


def voi(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    ignore_truth: Sequence[int] = (0,),
    ignore_prediction: Sequence[int] = (),
    mask: ArrayLike | None = None,
    zero_division: float = float("nan"),
) -> VariationOfInformation:
    """Variation of information VI = H(P|T) + H(T|P) in bits (Meilă 2007).

    Parameters
    ----------
    truth : ndarray of int, or OverlapTable
        Ground-truth labels, or a table (then leave out `prediction`, `mask`).
    prediction : ndarray of int, same shape as `truth`
    ignore_truth : sequence of int, default (0,)
        Voxels with these truth labels are left out (CREMI's default; pass
        ``()`` to count every voxel).
    ignore_prediction : sequence of int, default ()
        Voxels with these predicted labels are left out.
    mask : ndarray of bool, optional
    zero_division : float, default NaN
        Returned for both terms when no voxel remains.

    Returns
    -------
    VariationOfInformation
        Log base 2. Matches ``cremi.evaluation.voi`` (same ignore lists) and
        ``skimage.metrics.variation_of_information(truth, prediction,
        ignore_labels=ignore_truth)``, which returns ``[split, merge]``.

    Examples
    --------
    >>> voi(np.array([1, 1, 2, 2]), np.array([1, 2, 3, 4])).split  # each segment split in 2
    1.0
    """
    tab = as_table(truth, prediction, mask).without(
        truth=ignore_truth, prediction=ignore_prediction
    )
    n = tab.n_voxels
    if n == 0:
        z = float(zero_division)
        return VariationOfInformation(z, z, 2 * z)
    s_c = _sum_xlogx(tab.counts)
    s_t = _sum_xlogx(tab.truth_sizes()[1])
    s_p = _sum_xlogx(tab.pred_sizes()[1])
    split = max(0.0, (s_t - s_c) / n)
    merge = max(0.0, (s_p - s_c) / n)
    return VariationOfInformation(split, merge, split + merge)


@dataclass(frozen=True)
class InformationScores:
    """ISBI 2012 foreground-restricted information-theoretic scores (higher is better).

    Attributes
    ----------
    v_info : float
        ``2 I / (H(T) + H(P))``.
    split : float
        ``I / H(P)`` (low when the prediction splits truth segments).
    merge : float
        ``I / H(T)`` (low when the prediction merges truth segments).
    """

    v_info: float
    split: float
    merge: float


def isbi_information_scores(
    truth: ArrayLike | OverlapTable,
    prediction: ArrayLike | None = None,
    *,
    mask: ArrayLike | None = None,
    zero_division: float = float("nan"),
) -> InformationScores:
    """V_info of the ISBI 2012 challenge (Arganda-Carreras et al. 2015).

    Truth label 0 is left out; predicted label 0 voxels are singletons (as
    Fiji's ``VariationOfInformation.foregroundRestrictedStats``).
    ``I = H(T) + H(P) - H(T, P)``.

    Parameters
    ----------
    truth : ndarray of int, or OverlapTable
    prediction : ndarray of int, same shape as `truth`
    mask : ndarray of bool, optional
    zero_division : float, default NaN
        Value of a ratio whose entropy denominator is 0 (a single truth or
        predicted segment). Fiji returns an F-score of 0 there instead.

    Returns
    -------
    InformationScores
        The challenge scored 2D sections and averaged them; pass one section
        (or the table of one) to reproduce a per-section score.
    """
    tab = as_table(truth, prediction, mask).without(truth=(0,))
    n = tab.n_voxels
    if n == 0:
        z = float(zero_division)
        return InformationScores(z, z, z)
    inner = tab.without(prediction=(0,))
    ln_n = math.log(n)
    s_a = _sum_xlogx(tab.truth_sizes()[1], np.log)
    s_b = _sum_xlogx(inner.pred_sizes()[1], np.log)  # singletons: 1 log 1 = 0
    s_ab = _sum_xlogx(inner.counts, np.log)
    h_t = max(0.0, ln_n - s_a / n)
    h_p = max(0.0, ln_n - s_b / n)
    mi = max(0.0, ln_n - (s_a + s_b - s_ab) / n)

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else float(zero_division)

    return InformationScores(ratio(2 * mi, h_t + h_p), ratio(mi, h_p), ratio(mi, h_t))
