"""The blockwise pass: one streaming reduction gives every additive table of a volume pair.

Per block: the overlap table of (truth, prediction) labels, the per-object
moments of both label volumes (sizes, boxes, centroids, covariances) and,
with a probability map, two probability histograms (the ISBI 2012 pixel-error
thresholds 0.0:1.0:0.1 and the curve thresholds 0.00:1.00:0.01). Every part
adds up exactly, so the merged summary equals the summary of the whole
volume for any block shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emseg.evaluation._moments import ObjectMoments, object_moments
from emseg.metrics import OverlapTable, ProbabilityHistogram, overlap_table, probability_histogram

__all__ = ["VolumeSummary", "prepare_labels", "summarise_block"]

ISBI_THRESHOLDS = np.round(np.arange(11) / 10.0, 10)
CURVE_THRESHOLDS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True, eq=False)
class VolumeSummary:
    """Additive summary of a (truth, prediction) pair; :meth:`merge` is exact."""

    overlap: OverlapTable
    truth: ObjectMoments | None
    prediction: ObjectMoments | None
    pixel_histogram: ProbabilityHistogram | None
    curve_histogram: ProbabilityHistogram | None

    def merge(self, other: VolumeSummary) -> VolumeSummary:
        def add(a: Any, b: Any) -> Any:
            return None if a is None else a.merge(b)

        return VolumeSummary(
            self.overlap.merge(other.overlap),
            add(self.truth, other.truth),
            add(self.prediction, other.prediction),
            add(self.pixel_histogram, other.pixel_histogram),
            add(self.curve_histogram, other.curve_histogram),
        )


def prepare_labels(block: np.ndarray, threshold: float | None) -> np.ndarray:
    """Labels of a block: ``block > threshold`` (uint8) when a threshold is given."""
    if threshold is not None:
        return (block > threshold).view(np.uint8)
    if block.dtype == np.bool_:
        return block.view(np.uint8)
    return block


def summarise_block(
    truth: np.ndarray,
    prediction: np.ndarray,
    *probabilities: np.ndarray,
    block: Any,
    truth_threshold: float | None,
    pred_threshold: float | None,
    objects: bool,
) -> VolumeSummary:
    """The :class:`VolumeSummary` of one block (module level: picklable for Dask)."""
    t = prepare_labels(truth, truth_threshold)
    p = prepare_labels(prediction, pred_threshold)
    tab = overlap_table(t, p, n_threads=1)
    tm = pm = None
    if objects:
        begin = tuple(block.read_roi.begin)
        off = (0, *begin) if t.ndim == 2 else begin
        tm = object_moments(t, offset=off)
        pm = object_moments(p, offset=off)
    h_pix = h_cur = None
    if probabilities:
        prob = np.asarray(probabilities[0])
        h_pix = probability_histogram(t, prob, thresholds=ISBI_THRESHOLDS)
        h_cur = probability_histogram(t, prob, thresholds=CURVE_THRESHOLDS)
    return VolumeSummary(tab, tm, pm, h_pix, h_cur)


def merge_summaries(a: VolumeSummary, b: VolumeSummary) -> VolumeSummary:
    return a.merge(b)
