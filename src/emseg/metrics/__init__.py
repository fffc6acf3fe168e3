"""Segmentation metrics: one overlap table, every metric.

Rand, adapted Rand (CREMI / ISBI 2012 / scikit-image), VOI, ISBI V_rand and
V_info, IoU matching, AP, AJI and PQ are functions of the
:class:`OverlapTable` of (truth, prediction) voxel counts; the semantic scores
are functions of a :class:`ConfusionMatrix` or a :class:`ProbabilityHistogram`.
All three tables add up exactly across blocks. Every metric takes
``(truth, prediction)`` (or a table in place of both) and returns a frozen
dataclass or a dict of named floats. Formulas and conventions:
``docs/metrics.md``.
"""

from emseg.metrics._evaluate import (
    CONVENTIONS,
    evaluate_tables,
    geometric_metrics,
    instance_metrics,
    neuron_metrics,
)
from emseg.metrics._hausdorff import (
    HausdorffDistance,
    ObjectHausdorff,
    hausdorff_distance,
    hausdorff_per_object,
    surface_voxels,
)
from emseg.metrics._isbi import IsbiScores, isbi2012_scores, thin_borders
from emseg.metrics._matching import (
    AveragePrecision,
    Matching,
    ObjectTables,
    PanopticQuality,
    aggregated_jaccard_index,
    average_precision,
    coco_average_precision,
    match_instances,
    mitoem_average_precision,
    object_tables,
    panoptic_quality,
)
from emseg.metrics._pixel import (
    ClassScores,
    ConfusionMatrix,
    JaccardCurve,
    PixelError,
    ProbabilityHistogram,
    class_scores,
    confusion_matrix,
    jaccard_curve,
    pixel_error,
    probability_histogram,
    semantic_metrics,
)
from emseg.metrics._rand import AdaptedRand, RandIndex, adapted_rand_error, rand_index
from emseg.metrics._tables import OverlapTable, merge_tables, overlap_table
from emseg.metrics._voi import (
    InformationScores,
    VariationOfInformation,
    isbi_information_scores,
    voi,
)
from emseg.metrics._warping import WarpingError, is_simple_3d, simple_point_lut, warping_error

__all__ = [
    "CONVENTIONS",
    "AdaptedRand",
    "AveragePrecision",
    "ClassScores",
    "ConfusionMatrix",
    "HausdorffDistance",
    "InformationScores",
    "IsbiScores",
    "JaccardCurve",
    "Matching",
    "ObjectHausdorff",
    "ObjectTables",
    "OverlapTable",
    "PanopticQuality",
    "PixelError",
    "ProbabilityHistogram",
    "RandIndex",
    "VariationOfInformation",
    "WarpingError",
    "adapted_rand_error",
    "aggregated_jaccard_index",
    "average_precision",
    "class_scores",
    "coco_average_precision",
    "confusion_matrix",
    "evaluate_tables",
    "geometric_metrics",
    "hausdorff_distance",
    "hausdorff_per_object",
    "instance_metrics",
    "is_simple_3d",
    "isbi2012_scores",
    "isbi_information_scores",
    "jaccard_curve",
    "match_instances",
    "merge_tables",
    "mitoem_average_precision",
    "neuron_metrics",
    "object_tables",
    "overlap_table",
    "panoptic_quality",
    "pixel_error",
    "probability_histogram",
    "rand_index",
    "semantic_metrics",
    "simple_point_lut",
    "surface_voxels",
    "thin_borders",
    "voi",
    "warping_error",
]
