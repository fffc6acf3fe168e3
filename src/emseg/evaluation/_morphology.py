"""Morphology-aware evaluation: object shape distributions in truth vs prediction."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = ["MORPHOLOGY_FEATURES", "compare_distributions"]

#: Compared per-object features (columns of the object tables).
MORPHOLOGY_FEATURES = ("size_nm", "equivalent_diameter_nm", "elongation")


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if x.size else math.nan


def compare_distributions(truth: Any, prediction: Any) -> dict[str, dict[str, Any]]:
    """Summarise how each morphology feature differs between truth and prediction objects.

    Parameters
    ----------
    truth, prediction : pandas.DataFrame
        Object tables with the :data:`MORPHOLOGY_FEATURES` columns.

    Returns
    -------
    dict
        Per feature: ``n_truth``, ``n_prediction``, ``median_truth``,
        ``median_prediction``, ``median_ratio`` (prediction / truth),
        ``ks_statistic`` and ``ks_pvalue`` of the two-sample
        Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``, two-sided, asymptotic
        p-value; NaN
        when a side has no object).
    """
    from scipy.stats import ks_2samp

    out: dict[str, dict[str, Any]] = {}
    for feat in MORPHOLOGY_FEATURES:
        a = np.asarray(truth[feat], dtype=np.float64)
        b = np.asarray(prediction[feat], dtype=np.float64)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size and b.size:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                # tiny samples: scipy warns about its asymptotic p-value; the statistic is exact
                warnings.simplefilter("ignore", RuntimeWarning)
                ks = ks_2samp(a, b, method="asymp")
            stat, pval = float(ks.statistic), float(ks.pvalue)
        else:
            stat = pval = math.nan
        mt, mp = _median(a), _median(b)
        out[feat] = {
            "n_truth": int(a.size),
            "n_prediction": int(b.size),
            "median_truth": mt,
            "median_prediction": mp,
            "median_ratio": mp / mt if mt and math.isfinite(mt) and math.isfinite(mp) else math.nan,
            "ks_statistic": stat,
            "ks_pvalue": pval,
        }
    return out
