"""Evaluation of a segmentation against ground truth, exact on volumes of any size.

The layer above :mod:`emseg.metrics` (in-memory algorithms) and
:mod:`emseg.blockwise` (the engine): :func:`evaluate` streams both volumes
block by block, adds up the overlap table, confusion matrix, probability
histograms and per-object moments exactly, and returns every metric of the
``emseg evaluate --json`` schema, per-object tables, a morphology comparison
and the geometric scores (computed per object box or per section at scale).
:func:`write_error_maps` writes a voxel map of false positives / negatives,
splits and merges. See ``docs/metrics.md``.
"""

from emseg.evaluation._errormaps import (
    ERROR_CODES,
    ErrorCodeView,
    error_codes,
    worst_sections,
    write_error_maps,
)
from emseg.evaluation._evaluate import (
    IN_MEMORY_LIMIT,
    METRIC_KEYS,
    TASKS,
    EvaluationResult,
    evaluate,
)
from emseg.evaluation._geometric import hausdorff_pairs, streamed_warping_error
from emseg.evaluation._moments import ObjectMoments, morphology_table, object_moments
from emseg.evaluation._morphology import MORPHOLOGY_FEATURES, compare_distributions
from emseg.evaluation._scores import read_scores

__all__ = [
    "ERROR_CODES",
    "IN_MEMORY_LIMIT",
    "METRIC_KEYS",
    "MORPHOLOGY_FEATURES",
    "TASKS",
    "ErrorCodeView",
    "EvaluationResult",
    "ObjectMoments",
    "compare_distributions",
    "error_codes",
    "evaluate",
    "hausdorff_pairs",
    "morphology_table",
    "object_moments",
    "read_scores",
    "streamed_warping_error",
    "worst_sections",
    "write_error_maps",
]
