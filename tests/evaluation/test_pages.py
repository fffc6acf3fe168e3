"""The TIFF page reader returns exactly what open_image / tifffile return."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from emseg.evaluation import evaluate
from emseg.evaluation._pages import PageSource, page_reader
from emseg.io import open_image

KEYS = [
    (Ellipsis,),
    (slice(3, 9), slice(5, 30), slice(0, 40)),  # whole rows
    (slice(0, 4), slice(2, 7), slice(11, 23)),  # a box inside the rows
    (4,),
    (slice(9, 2, -3), slice(None, None, 2), 7),
    (slice(5, 5),),
]


def _stack(rng: np.random.Generator, dtype=np.uint32) -> np.ndarray:
    return rng.integers(0, 5000, (10, 31, 40)).astype(dtype)


@pytest.mark.parametrize(
    ("options", "raw"),
    [
        ({}, True),  # contiguous, uncompressed
        ({"byteorder": ">"}, True),  # big-endian
        ({"compression": "zlib"}, False),
        ({"tile": (16, 16)}, False),
        ({"rowsperstrip": 7, "compression": "zlib"}, False),
    ],
)
def test_page_reader_equals_tifffile(tmp_path, rng, options, raw):
    data = _stack(rng)
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, data, photometric="minisblack", **options)
    img = open_image(path, spacing=(30, 4, 4))
    fast = page_reader(img)
    assert isinstance(fast._source, PageSource)
    assert (fast._source.offsets is not None) == raw
    assert (fast.shape, fast.dtype, fast.spacing) == (img.shape, img.dtype, img.spacing)
    for key in KEYS:
        np.testing.assert_array_equal(fast[key], data[key])
        np.testing.assert_array_equal(fast[key], img[key])
    # a pickled copy (as sent to distributed workers) reads the same
    clone = pickle.loads(pickle.dumps(fast._source))
    np.testing.assert_array_equal(
        clone.read((slice(1, 3), slice(0, 31), slice(4, 9))), data[1:3, :, 4:9]
    )


def test_page_reader_2d_and_uint16(tmp_path, rng):
    data = rng.integers(0, 60000, (33, 17)).astype(np.uint16)
    path = tmp_path / "p.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    fast = page_reader(open_image(path, spacing=(4, 4)))
    assert isinstance(fast._source, PageSource)
    np.testing.assert_array_equal(fast[...], data)
    np.testing.assert_array_equal(fast[3:9, 2:11], data[3:9, 2:11])


def test_page_reader_leaves_other_images_alone(tmp_path, rng):
    arr = _stack(rng)
    assert page_reader(arr) is arr
    # channels: the general reader keeps them
    path = tmp_path / "c.ome.tif"
    tifffile.imwrite(
        path, rng.integers(0, 9, (2, 4, 8, 8), dtype=np.uint8), metadata={"axes": "CZYX"}
    )
    img = open_image(path, spacing=(30, 4, 4))
    assert img.axes == "czyx"
    assert page_reader(img) is img


def test_page_reader_truncated_file_raises(tmp_path, rng):
    data = _stack(rng)
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    fast = page_reader(open_image(path, spacing=(1, 1, 1)))
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 4000)
    with pytest.raises(OSError, match="truncated"):
        fast[9]


def test_evaluate_on_tiffs_equals_arrays(tmp_path, rng):
    t = np.repeat(np.repeat(rng.integers(0, 40, (6, 5, 5)), 4, axis=1), 4, axis=2).astype(np.uint32)
    p = np.roll(t, 1, axis=2)
    p[:, :3] = 0
    tifffile.imwrite(tmp_path / "t.tif", t, photometric="minisblack")
    tifffile.imwrite(tmp_path / "p.tif", p, photometric="minisblack", compression="zlib")
    a = evaluate(str(tmp_path / "t.tif"), str(tmp_path / "p.tif"), spacing=(1, 1, 1),
                 task="neuron", block_shape=(2, 7, 20), progress=False)  # fmt: skip
    b = evaluate(t, p, spacing=(1, 1, 1), task="neuron", progress=False)
    assert a.metrics == b.metrics
    assert a.metrics["voi_split"] > 0
