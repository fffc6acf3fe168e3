"""Every real dataset file opens lazily with its documented shape, dtype, spacing and values.

Values are checked on one or two slices (the files are zlib-compressed TIFFs),
except for the small volumes, which are read whole.
"""

from __future__ import annotations

import numpy as np
import pytest

from emseg.data import DATASETS, open_dataset_file

pytestmark = pytest.mark.data

FILES = [(name, key) for name, ds in DATASETS.items() for key in ds.files]


@pytest.mark.parametrize(("name", "key"), FILES, ids=[f"{n}/{k}" for n, k in FILES])
def test_file_opens_with_documented_geometry(data_root, name, key):
    doc = DATASETS[name].files[key]
    img = open_dataset_file(name, key)
    assert img.shape == doc.shape
    assert img.dtype == np.dtype(doc.dtype)
    assert img.axes == "zyx"
    assert img.spacing == DATASETS[name].spacing
    assert img.spacing_known
    assert img.format == "tiff"
    # one page per z-slice, read by strips of whole rows
    assert img.chunks[0] == 1
    assert img.chunks[2] == doc.shape[2]
    assert 1 <= img.chunks[1] <= doc.shape[1]
    plane = img[doc.shape[0] // 2]
    assert plane.shape == doc.shape[1:]
    assert plane.dtype == np.dtype(doc.dtype)


def _values(name, key, z=None):
    img = open_dataset_file(name, key)
    data = img[...] if z is None else np.stack([img[i] for i in z])
    return np.unique(data)


def test_isbi_labels_are_0_and_255(data_root):
    assert _values("isbi2012", "train_labels", z=[0, 29]).tolist() == [0, 255]


def test_lucchi_labels_are_0_and_255(data_root):
    assert _values("lucchi_pp", "labels", z=[0, 79]).tolist() == [0, 255]


def test_snemi_labels_are_1_to_27(data_root):
    assert _values("snemi3d_mini", "labels").tolist() == list(range(1, 28))


def test_snemi_fragments_and_probabilities(data_root):
    fragments = _values("snemi3d_mini", "fragments")
    assert fragments.min() == 1
    assert fragments.max() == 1389
    probabilities = _values("snemi3d_mini", "probabilities")
    assert probabilities.min() >= 32


def test_gala_groundtruth_ids(data_root):
    train = _values("gala_fibsem", "train_groundtruth")
    test = _values("gala_fibsem", "test_groundtruth")
    assert (train.min(), train.max()) == (0, 87)
    assert (test.min(), test.max()) == (0, 132)


def test_drosophila_class_map_and_masks(data_root):
    classes = set(_values("drosophila_vnc_sstem", "classes", z=[0, 19]).tolist())
    assert classes <= {0, 32, 64, 96, 128, 159, 191, 223, 255}
    assert {0, 255} <= classes
    for key in ("membranes", "mitochondria", "synapses"):
        assert set(_values("drosophila_vnc_sstem", key, z=[0, 10]).tolist()) <= {0, 1}


def test_flyem_oversegmentation_has_no_zero(data_root):
    overseg = _values("flyem_medulla", "oversegmentation", z=[0, 124])
    assert overseg.min() >= 1
    assert overseg.max() <= 3337
    groundtruth = _values("flyem_medulla", "groundtruth", z=[0, 124])
    assert groundtruth.max() <= 525


def test_lazy_slice_matches_full_read(data_root):
    img = open_dataset_file("gala_fibsem", "train_image")
    full = img[...]
    np.testing.assert_array_equal(img[10:12, 20:40, ::7], full[10:12, 20:40, ::7])
    np.testing.assert_array_equal(img.to_dask()[25].compute(), full[25])
