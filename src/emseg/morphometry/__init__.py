"""Morphometry: one row per object of a label volume, in physical units (nm).

:func:`measure` runs one exact streaming reduction over blocks (counts,
moments, bounding boxes, intensity histograms, majority class) and then
measures each object's shape from its bounding-box crop (mesh surface area,
convex-hull solidity, Feret diameter). :func:`write_table` /
:func:`read_table` store the table as Parquet or CSV with units in the column
names. See ``docs/morphometry.md``.
"""

from emseg.morphometry._blockwise import Morphometry, measure
from emseg.morphometry._regions import RegionSums, histogram_percentiles, region_sums
from emseg.morphometry._shape import (
    axis_ratios,
    convex_voxels,
    equivalent_diameter,
    feret_max,
    principal_axes,
    sphericity,
)
from emseg.morphometry._surface import Surface, object_surface
from emseg.morphometry._table import PERCENTILES, UNITS, build_table, read_table, write_table

__all__ = [
    "PERCENTILES",
    "UNITS",
    "Morphometry",
    "RegionSums",
    "Surface",
    "axis_ratios",
    "build_table",
    "convex_voxels",
    "equivalent_diameter",
    "feret_max",
    "histogram_percentiles",
    "measure",
    "object_surface",
    "principal_axes",
    "read_table",
    "region_sums",
    "sphericity",
    "write_table",
]
