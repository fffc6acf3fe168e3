"""Data for emseg: synthetic EM with exact ground truth, and the real test datasets."""

from emseg.data._datasets import (
    DATASETS,
    DataFile,
    Dataset,
    data_root,
    dataset_path,
    open_dataset_file,
)
from emseg.data._synthetic import (
    CLASS_NAMES,
    SyntheticEM,
    SyntheticSlide,
    synthetic_em,
    synthetic_slide,
)

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "DataFile",
    "Dataset",
    "SyntheticEM",
    "SyntheticSlide",
    "data_root",
    "dataset_path",
    "open_dataset_file",
    "synthetic_em",
    "synthetic_slide",
]
