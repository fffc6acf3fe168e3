"""Filter banks for pixel classification, in physical units (sigma in nm).

:func:`compute_features` computes an ilastik-like stack (Gaussian, gradient
magnitude, Laplacian and difference of Gaussians, structure-tensor and
Hessian eigenvalues at several scales) in memory as float32;
:func:`compute_features_blockwise` does the same for a volume of any size,
block by block, with the halo each scale needs. See
``docs/pixel_classification.md``.
"""

from emseg.features._blockwise import compute_features_blockwise
from emseg.features._eigen import symmetric_eigenvalues
from emseg.features._filters import (
    ALL_FEATURES,
    DEFAULT_SCALES_PX,
    FEATURES,
    ILASTIK_SCALES_PX,
    FeatureSpec,
    check_image,
    compute_features,
    default_scales,
    feature_halo,
    feature_names,
    feature_spec,
    n_features,
)

__all__ = [
    "ALL_FEATURES",
    "DEFAULT_SCALES_PX",
    "FEATURES",
    "ILASTIK_SCALES_PX",
    "FeatureSpec",
    "check_image",
    "compute_features",
    "compute_features_blockwise",
    "default_scales",
    "feature_halo",
    "feature_names",
    "feature_spec",
    "n_features",
    "symmetric_eigenvalues",
]
