"""emseg — automated image analysis of large-scale cellular electron microscopy.

Subpackages (imported on demand, none of them at ``import emseg``):

``emseg.io``         open any EM file as a lazy array with its spacing; write OME-Zarr.
``emseg.data``       synthetic EM with exact ground truth; the real test datasets.
``emseg.blockwise``  blockwise execution over volumes larger than memory.
``emseg.metrics``    every segmentation metric of the field.
``emseg.cli``        the ``emseg`` command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
