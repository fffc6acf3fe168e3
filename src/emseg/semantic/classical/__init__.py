"""Learning-free EM segmentation: normalisation, thresholds, morphology in nm, superpixels.

Plain functions on numpy arrays (lengths in nm through `spacing`), plus
:func:`run_recipe` with a few named recipes (``normalize``, ``clahe``,
``local``, ``otsu``, ``li``, ``superpixels``, ``nucleus``) that run blockwise
where the operation is local and in memory, with a size check, where it is
global; the CLI is ``emseg classical RECIPE IN OUT``.
"""

from emseg.semantic.classical._intensity import clahe, normalize_percentiles
from emseg.semantic.classical._morphology import (
    ball,
    binary_closing,
    binary_opening,
    fill_holes,
    largest_component,
    remove_small_holes,
    remove_small_objects,
)
from emseg.semantic.classical._nucleus import NucleusResult, segment_nucleus
from emseg.semantic.classical._recipes import MAX_VOXELS, RECIPES, check_fits_memory, run_recipe
from emseg.semantic.classical._superpixels import superpixels
from emseg.semantic.classical._threshold import threshold, threshold_value

__all__ = [
    "MAX_VOXELS",
    "RECIPES",
    "NucleusResult",
    "ball",
    "binary_closing",
    "binary_opening",
    "check_fits_memory",
    "clahe",
    "fill_holes",
    "largest_component",
    "normalize_percentiles",
    "remove_small_holes",
    "remove_small_objects",
    "run_recipe",
    "segment_nucleus",
    "superpixels",
    "threshold",
    "threshold_value",
]
