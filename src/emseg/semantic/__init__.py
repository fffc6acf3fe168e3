"""Semantic segmentation: per-voxel classes or probabilities.

- :mod:`emseg.semantic.forest`: random-forest pixel classification from
  scribbles (ilastik-like), with autocontext and safe model files;
- :mod:`emseg.semantic.classical`: learning-free EM pipelines (normalisation,
  thresholds, morphology in nm, superpixels, a nucleus recipe).

Subpackages are imported on use (``from emseg.semantic import forest``).
"""

__all__ = ["classical", "forest"]
