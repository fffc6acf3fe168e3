"""Random-forest pixel classification from sparse scribbles, with autocontext.

:func:`train_forest` fits scikit-learn forests on an ilastik-like filter bank
(:mod:`emseg.features`, scales in nm); the fitted trees are copied to plain
arrays (:class:`PackedForest`) that scikit-learn's compiled traversal (on
trees rebuilt from the validated arrays) or a numba kernel evaluates and that
:func:`save_model` stores in a safetensors file with JSON metadata (no pickle:
:func:`load_model` never runs code from the file). :func:`predict_blockwise`
writes per-class probabilities of a volume of any size to OME-Zarr.
:func:`simulate_annotation` plays back ilastik's loop (sparse strokes, then
corrections where the prediction is wrong) from dense labels of a training
region; :func:`sample_corrections` is one round of it.
"""

from emseg.semantic.forest._annotate import (
    AnnotationResult,
    AnnotationRound,
    boundary_distance,
    sample_corrections,
    simulate_annotation,
)
from emseg.semantic.forest._io import FORMAT, FORMAT_VERSION, load_model, save_model
from emseg.semantic.forest._model import CONTEXT_SCALES_PX, PixelClassifier, class_map
from emseg.semantic.forest._packed import PackedForest
from emseg.semantic.forest._predict import predict_blockwise, quantize
from emseg.semantic.forest._train import train_forest

__all__ = [
    "CONTEXT_SCALES_PX",
    "FORMAT",
    "FORMAT_VERSION",
    "AnnotationResult",
    "AnnotationRound",
    "PackedForest",
    "PixelClassifier",
    "boundary_distance",
    "class_map",
    "load_model",
    "predict_blockwise",
    "quantize",
    "sample_corrections",
    "save_model",
    "simulate_annotation",
    "train_forest",
]
