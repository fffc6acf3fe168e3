"""Inference: blockwise == in memory, TTA, outputs, ensembles, safe model files, configs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from emseg.errors import DatasetNotFoundError, FormatError
from emseg.semantic.deep import (
    ConfigError,
    class_map,
    load_config,
    load_model,
    majority_vote,
    predict_blockwise,
    predict_ensemble,
    predict_image,
    predict_triplanar,
)

from ._helpers import eval_model


@pytest.fixture
def volume(rng):
    return rng.integers(0, 255, size=(3, 50, 70), dtype=np.uint8)


@pytest.mark.parametrize("block_shape", [(1, 16, 16), (2, 32, 24), (3, 50, 70)])
def test_blockwise_equals_in_memory_2d_net(tiny_config, volume, block_shape):
    model = eval_model(tiny_config)
    ref = predict_image(model, volume, tile_shape=(1, 32, 32), overlap=0.5)
    assert ref.shape == (2, 3, 50, 70)
    np.testing.assert_allclose(ref.sum(axis=0), 1.0, atol=1e-5)
    out = predict_blockwise(
        model,
        volume,
        dtype="float32",
        tile_shape=(1, 32, 32),
        overlap=0.5,
        block_shape=block_shape,
        chunks=block_shape,
        progress=False,
    )
    assert out.shape == ref.shape
    np.testing.assert_allclose(out[...], ref, atol=1e-5)


def test_blockwise_equals_in_memory_3d_anisotropic(tiny_config, rng):
    vol = rng.integers(0, 255, size=(12, 40, 36), dtype=np.uint8)
    model = eval_model(
        tiny_config,
        data={"class_names": ["bg", "a", "b"], "patch_shape": [4, 16, 16]},
        network={"dim": 3, "channels": [4, 8, 8], "anisotropic": True},
    )
    ref = predict_image(model, vol, overlap=0.25)
    assert ref.shape == (3, 12, 40, 36)
    out = predict_blockwise(
        model,
        vol,
        dtype="float32",
        overlap=0.25,
        block_shape=(5, 16, 16),
        chunks=(5, 16, 16),
        progress=False,
        n_workers=2,
    )
    np.testing.assert_allclose(out[...], ref, atol=1e-5)


def test_blockwise_to_ome_zarr_uint8_and_class_map(tiny_config, volume, tmp_path):
    from emseg.io import open_image

    model = eval_model(tiny_config)
    ref = predict_image(model, volume[:, :32, :32], tile_shape=(1, 32, 32))
    predict_blockwise(
        model,
        volume[:, :32, :32],
        out=tmp_path / "p.ome.zarr",
        class_map_out=tmp_path / "c.ome.zarr",
        dtype="uint8",
        tile_shape=(1, 32, 32),
        block_shape=(1, 16, 16),
        chunks=(1, 16, 16),
        progress=False,
    )
    p = open_image(tmp_path / "p.ome.zarr")
    assert p.dtype == np.uint8
    assert p.shape == (2, 3, 32, 32)
    assert np.abs(p[...] / 255.0 - ref).max() <= 0.5 / 255 + 1e-6
    c = open_image(tmp_path / "c.ome.zarr")[...]
    np.testing.assert_array_equal(c, np.argmax(ref, axis=0))


def test_2d_image_and_tta(tiny_config, volume):
    model = eval_model(tiny_config)
    img = volume[0]
    p = predict_image(model, img)
    np.testing.assert_allclose(p, predict_image(model, img[None])[:, 0], atol=1e-6)
    t = predict_image(model, img, tta=True)
    # TTA = mean of the 4 flips done by hand
    manual = np.zeros_like(p)
    for fy in (False, True):
        for fx in (False, True):
            im = img[::-1] if fy else img
            im = im[:, ::-1] if fx else im
            q = predict_image(model, np.ascontiguousarray(im))
            q = q[:, ::-1] if fy else q
            q = q[:, :, ::-1] if fx else q
            manual += q / 4
    np.testing.assert_allclose(t, manual, atol=1e-5)
    b = predict_image(model, img, precision="bf16")
    assert np.abs(b - p).max() < 0.1


def test_ensembles_and_vote(tiny_config, rng):
    a, b = eval_model(tiny_config, seed=0), eval_model(tiny_config, seed=1)
    vol = rng.integers(0, 255, size=(16, 16, 16), dtype=np.uint8)
    e = predict_ensemble([a, b], vol)
    np.testing.assert_allclose(e, (predict_image(a, vol) + predict_image(b, vol)) / 2, atol=1e-6)
    tri = predict_triplanar(a, vol)
    xz = predict_image(a, np.ascontiguousarray(vol.transpose(1, 0, 2))).transpose(0, 2, 1, 3)
    yz = predict_image(a, np.ascontiguousarray(vol.transpose(2, 0, 1))).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(tri, (predict_image(a, vol) + xz + yz) / 3, atol=1e-6)
    maps = [np.array([0, 1, 2, 2]), np.array([1, 1, 0, 2]), np.array([2, 0, 0, 1])]
    np.testing.assert_array_equal(majority_vote(maps), [0, 1, 0, 2])
    probs = np.array([[0.2, 0.7], [0.8, 0.3]], dtype=np.float32)
    np.testing.assert_array_equal(class_map(probs, head="softmax"), [1, 0])
    np.testing.assert_array_equal(class_map(probs[:1], head="sigmoid"), [0, 1])


def test_save_load_roundtrip_and_pickle_refused(tiny_config, volume, tmp_path):
    model = eval_model(tiny_config)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(predict_image(loaded, volume[0]), predict_image(model, volume[0]))
    # a pickle renamed to .safetensors is refused, and never unpickled
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((tmp_path / "m" / "config.json").read_text())

    class Boom:
        def __reduce__(self):
            return (print, ("pickle was executed",))

    with open(evil / "model.safetensors", "wb") as fh:
        pickle.dump({"w": Boom()}, fh)
    with pytest.raises(FormatError, match="not a safetensors"):
        load_model(evil)
    torch.save({"w": torch.zeros(2)}, evil / "model.safetensors")
    with pytest.raises(FormatError, match="not a safetensors"):
        load_model(evil)
    with pytest.raises(DatasetNotFoundError, match="shipped"):
        load_model(tmp_path / "nothing-here")


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"network": {"chanels": [4]}}, "network.chanels"),
        ({"network": {"channels": [4, -1]}}, "network.channels"),
        ({"network": {"norm": "layer"}}, "network.norm"),
        ({"optimiser": {"lr": "fast"}}, "optimiser.lr"),
        ({"optimiser": {"lr": 0}}, "optimiser.lr"),
        ({"data": {"patch_shape": [1, 0, 64]}}, "data.patch_shape"),
        ({"data": {"train_z": [5, 2]}}, "data.train_z"),
        ({"data": {"label_map": {"255": 7}}}, "data.label_map"),
        ({"augment": {"elastic_prob": 2}}, "augment.elastic_prob"),
        ({"loss": {"kind": "bce"}}, "loss.kind"),
        ({"schedule": {"warmup_steps": 5000}}, "schedule.warmup_steps"),
        ({"network": {"head": "affinities"}}, "network.offsets"),
        ({"freeze_encoder": True}, "freeze_encoder"),
        ({"validation": {"every": 0}}, "validation.every"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        load_config(cfg)


def test_config_file_roundtrip(tmp_path, tiny_config):
    cfg = tiny_config()
    (tmp_path / "c.yaml").write_text(
        "data:\n  image: img.zarr\n  labels: lab.zarr\n  label_map: {255: 1, 0: 0}\n"
        "network:\n  channels: [8, 16]\n"
    )
    loaded = load_config(tmp_path / "c.yaml")
    assert loaded.data.image == str((tmp_path / "img.zarr").resolve())
    assert loaded.data.label_map == {255: 1, 0: 0}
    assert loaded.network.channels == (8, 16)
    from emseg.semantic.deep._config import from_dict

    assert from_dict(type(cfg), cfg.to_dict()) == cfg


def test_default_prediction_blocks_span_three_strides():
    from emseg.semantic.deep._infer import prediction_block_shape

    # stride 384 -> 3 strides = 1152 -> 5 chunks of 256; z (tile 1) one chunk
    assert prediction_block_shape((30, 4096, 4096), (1, 512, 512), 0.25, (8, 256, 256)) == (
        8,
        1280,
        1280,
    )
    assert prediction_block_shape((512,) * 3, (96,) * 3, 0.25, (64,) * 3) == (256, 256, 256)
    assert prediction_block_shape((50, 70), (1, 32, 32), 0.5, (50, 70)) == (50, 70)
