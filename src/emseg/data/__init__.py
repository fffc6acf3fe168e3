"""Data for emseg: synthetic EM with exact ground truth, and the real test datasets."""

from emseg.data._datasets import (
    DATASETS,
    DataFile,
    Dataset,
    data_root,
    dataset_path,
    open_dataset_file,
)

__all__ = [
    "DATASETS",
    "DataFile",
    "Dataset",
    "data_root",
    "dataset_path",
    "open_dataset_file",
]
