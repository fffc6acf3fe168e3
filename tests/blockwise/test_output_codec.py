"""Outputs created by blockwise jobs use the fast codec and stay readable OME-Zarr."""

from __future__ import annotations

import numpy as np
import zarr

from emseg.blockwise import gaussian_filter, label


def _codec(arr) -> dict:
    return arr.metadata.to_dict()["codecs"][-1]


def test_ome_zarr_output_is_blosc_lz4_and_keeps_metadata(tmp_path, rng) -> None:
    from emseg.io import open_image

    image = (rng.random((12, 20, 20)) * 255).astype(np.uint8)
    out = gaussian_filter(
        image,
        sigma=1.0,
        unit="voxel",
        spacing=(30.0, 4.0, 4.0),
        out=tmp_path / "g.zarr",
        block_shape=(4, 8, 8),
        chunks=(4, 8, 8),
        progress=False,
    )
    codec = _codec(out)
    assert codec["name"] == "blosc"
    assert codec["configuration"]["cname"] == "lz4"
    assert codec["configuration"]["typesize"] == 4
    reopened = open_image(tmp_path / "g.zarr")
    assert reopened.spacing == (30.0, 4.0, 4.0)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")
    assert group.attrs["emseg"]["parameters"]["compression"] == "blosc-lz4"
    from scipy import ndimage

    ref = ndimage.gaussian_filter(image.astype(np.float32), 1.0, output=np.float32)
    np.testing.assert_array_equal(np.asarray(reopened[:]), ref)


def test_plain_zarr_label_output_is_blosc_lz4(tmp_path) -> None:
    image = np.zeros((8, 8, 8), np.uint8)
    image[1:3, 1:7, 2] = 1
    image[5, 5, 5] = 1
    out = label(image, out=tmp_path / "labels", block_shape=4, chunks=4, progress=False)
    assert _codec(out)["configuration"] == {
        "typesize": 8,
        "cname": "lz4",
        "clevel": 5,
        "shuffle": "shuffle",
        "blocksize": 0,
    }
    assert out.attrs["emseg"]["n_labels"] == 2
