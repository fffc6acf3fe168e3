"""Lazy EM I/O with physical units.

``open_image`` opens TIFF / OME-TIFF / ImageJ, folders of 2D slices, HDF5,
Zarr v2/v3 and OME-Zarr, N5 and MRC files as a :class:`LazyImage` whose
``spacing`` is in nm (z, y, x). ``write_image`` writes OME-Zarr with a
multiscale pyramid and provenance, or TIFF.
"""

from emseg.io._describe import describe, disk_size
from emseg.io._image import ArraySource, ImageInfo, LazyImage, Source, unit_to_nm
from emseg.io._open import FORMATS, detect_format, open_image, split_dataset_path, supported_formats
from emseg.io._pyramid import Level, downsample_mean, downsample_mode, plan_levels
from emseg.io._write import (
    COMPRESSIONS,
    create_image,
    default_chunks,
    write_image,
    write_pyramid,
    write_tiff,
)

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "ArraySource",
    "ImageInfo",
    "LazyImage",
    "Level",
    "Source",
    "create_image",
    "default_chunks",
    "describe",
    "detect_format",
    "disk_size",
    "downsample_mean",
    "downsample_mode",
    "open_image",
    "plan_levels",
    "split_dataset_path",
    "supported_formats",
    "unit_to_nm",
    "write_image",
    "write_pyramid",
    "write_tiff",
]
