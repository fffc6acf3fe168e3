"""Preset options for neuron presets: tri-planar deep prediction and large agglomeration blocks."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.errors import FormatError
from emseg.io import open_image
from emseg.presets import load_preset, segment, write_preset
from emseg.presets._segment import _instance_run

from .conftest import SPACING, make_preset


def _same_partition(a, b):
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def _tiny_deep_model():
    from emseg.semantic.deep import Intensity, Model, load_config

    cfg = load_config({
        "data": {"class_names": ["background", "blob"], "patch_shape": [1, 16, 16]},
        "network": {"channels": [4, 8]},
    })  # fmt: skip
    model = Model.create(cfg, spacing=SPACING, intensity=Intensity(128.0, 60.0), seed=0)
    model.network.eval()
    return model


def test_deep_preset_with_planes_3_predicts_tri_planar(tmp_path, blob_data):
    from emseg.semantic.deep import predict_image
    from emseg.semantic.forest import quantize

    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    image = blob_data[0][6:18, 4:36, 8:44]  # 12 x 32 x 36: three different sides
    model = _tiny_deep_model()
    folder = tmp_path / "deep3"
    model.save(folder / "net")
    write_preset({
        "spacing": list(SPACING),
        "prediction": {"kind": "deep", "model": "net", "class": "blob", "planes": 3},
        "instances": {"method": "components", "components": {"threshold": 0.5}},
    }, folder)  # fmt: skip
    try:
        result = segment(image, folder, tmp_path / "out", spacing=SPACING, progress=False)
        tri = predict_image(model, image, planes=3)[1]
        xy = predict_image(model, image)[1]
    finally:
        torch.set_num_threads(threads)
    probs = open_image(result.probabilities)[1]
    # uint8 output: within one quantisation step of the tri-planar map, not of the xy map
    assert np.abs(probs.astype(np.int16) - quantize(tri).astype(np.int16)).max() <= 1
    assert np.abs(probs.astype(np.int16) - quantize(xy).astype(np.int16)).max() > 1


def test_preset_planes_must_be_1_or_3(tmp_path):
    model = _tiny_deep_model()
    model.save(tmp_path / "p" / "net")
    doc = {
        "spacing": list(SPACING),
        "prediction": {"kind": "deep", "model": "net", "class": "blob", "planes": 2},
        "instances": {"method": "components", "components": {"threshold": 0.5}},
    }
    with pytest.raises(FormatError, match=r"prediction\.planes"):
        write_preset(doc, tmp_path / "p")


def test_block_voxels_sets_the_default_agglomeration_blocks(tmp_path, forest_model_file):
    preset = make_preset(tmp_path / "agg", forest_model_file)
    run = {"block_shape": None, "chunks": None, "n_workers": 1}
    shape = (100, 300, 300)
    assert _instance_run(preset, shape, tmp_path / "x.zarr", run) is run  # no block_voxels
    doc = dict(preset.document)
    doc["instances"] = {**doc["instances"], "block_voxels": 2**24}
    big = write_preset(doc, preset.path)
    block = _instance_run(big, shape, tmp_path / "x.zarr", run)["block_shape"]
    assert 4 * 2**21 < np.prod(block) <= 2 * 2**24  # well above the engine default (2**21)
    # whole chunks (default 64^3 here), as the engine needs for parallel writes
    assert all(b % 64 == 0 or b >= s for b, s in zip(block, shape, strict=True))
    small = _instance_run(big, (24, 48, 48), tmp_path / "x.zarr", run)["block_shape"]
    assert all(b >= s for b, s in zip(small, (24, 48, 48), strict=True))  # one block
    mine = {**run, "block_shape": (8, 8, 8)}
    assert _instance_run(big, shape, tmp_path / "x.zarr", mine) is mine  # the user's wins


def test_one_block_agglomeration_equals_in_memory_with_a_small_halo(
    tmp_path, blob_data, forest_model_file
):
    """block_voxels covering the volume: the in-memory chain even with a halo of 1 voxel."""
    from emseg.instance import agglomerate
    from emseg.instance import supervoxels as make_supervoxels
    from emseg.semantic.forest import load_model, quantize

    image, _ = blob_data
    supervoxels = {"seeds": "distance", "threshold": 0.5, "min_seed_distance_nm": 40.0}
    preset = make_preset(tmp_path / "agg", forest_model_file)
    doc = dict(preset.document)
    doc["prediction"] = {**doc["prediction"], "class": "background"}
    doc["instances"] = {
        "method": "agglomerate",
        "supervoxels": supervoxels,
        "agglomeration": {"edges": "mean", "threshold": 0.4, "edge_classifier": None},
        "min_size_nm3": 0.0,
        "halo_nm": [10.0, 10.0, 10.0],
        "block_voxels": 2**24,
    }
    p = write_preset(doc, preset.path)
    assert load_preset(p.path).instances["block_voxels"] == 2**24
    result = segment(image, p.path, tmp_path / "out", spacing=SPACING, chunks=16, progress=False)
    boundary = quantize(load_model(forest_model_file).predict_proba(image, spacing=SPACING))[0]
    bnd = boundary.astype(np.float32) / 255  # the in-memory chain on the stored map
    expected = agglomerate(make_supervoxels(bnd, spacing=SPACING, **supervoxels), bnd,
                           threshold=0.4)  # fmt: skip
    labels = open_image(result.labels)[:]
    assert 1 < result.n_objects == len(np.unique(expected))
    _same_partition(labels, expected)
    # blocks of one chunk (16^3) with that 1-voxel halo: seams, not the in-memory result
    doc["instances"] = {**doc["instances"], "block_voxels": 16**3}
    p = write_preset(doc, preset.path)
    small = segment(image, p.path, tmp_path / "out16", spacing=SPACING, chunks=16, progress=False)
    seams = open_image(small.labels)[:]
    pairs = np.unique(np.stack([seams.ravel(), expected.ravel()]), axis=1)
    assert pairs.shape[1] > len(np.unique(expected))
