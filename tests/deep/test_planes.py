"""Tri-planar training and prediction: orientations of the training slab, planes=3."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.errors import EmsegValueError
from emseg.semantic.deep import (
    ConfigError,
    Model,
    predict_blockwise,
    predict_image,
    train,
)
from emseg.semantic.deep._train import orientation_samplers

from ._helpers import eval_model

ISOTROPIC = (10.0, 10.0, 10.0)  # the models' training spacing (nm)


@pytest.fixture
def cuboid(rng):
    # three different sides, so that any mix-up of axes changes the shape or the values
    return rng.integers(0, 255, size=(12, 20, 28), dtype=np.uint8)


def test_planes_3_is_the_mean_of_the_three_transposed_predictions(tiny_config, cuboid):
    model = eval_model(tiny_config, spacing=ISOTROPIC)
    kw = {"tile_shape": (1, 16, 16), "overlap": 0.5}
    xy = predict_image(model, cuboid, **kw)
    zx = predict_image(model, np.ascontiguousarray(cuboid.transpose(1, 0, 2)), **kw)
    zy = predict_image(model, np.ascontiguousarray(cuboid.transpose(2, 0, 1)), **kw)
    manual = (xy + zx.transpose(0, 2, 1, 3) + zy.transpose(0, 2, 3, 1)) / 3
    tri = predict_image(model, cuboid, planes=3, **kw)
    assert tri.shape == (2, 12, 20, 28)
    np.testing.assert_allclose(tri, manual, atol=1e-6)
    # the three views really differ (else the test could not see a wrong axis order)
    assert np.abs(tri - xy).max() > 1e-3
    np.testing.assert_allclose(predict_image(model, cuboid, planes=1, **kw), xy)


@pytest.mark.parametrize("block_shape", [(4, 8, 12), (12, 20, 28)])
def test_planes_3_blockwise_equals_in_memory(tiny_config, cuboid, block_shape):
    model = eval_model(tiny_config, spacing=ISOTROPIC)
    ref = predict_image(model, cuboid, tile_shape=(1, 16, 16), overlap=0.5, planes=3)
    out = predict_blockwise(
        model,
        cuboid,
        dtype="float32",
        tile_shape=(1, 16, 16),
        overlap=0.5,
        planes=3,
        block_shape=block_shape,
        chunks=block_shape,
        progress=False,
    )
    np.testing.assert_allclose(out[...], ref, atol=1e-5)


def test_planes_3_default_blocks_are_cubes_spanning_every_view(tiny_config, rng):
    model = eval_model(tiny_config, spacing=ISOTROPIC)
    vol = rng.integers(0, 255, size=(40, 48, 56), dtype=np.uint8)
    ref = predict_image(model, vol, tile_shape=(1, 16, 16), planes=3)
    out = predict_blockwise(
        model, vol, dtype="float32", tile_shape=(1, 16, 16), planes=3, progress=False
    )
    np.testing.assert_allclose(out[...], ref, atol=1e-5)


def test_planes_validation(tiny_config, cuboid):
    model = eval_model(tiny_config, spacing=ISOTROPIC)
    with pytest.raises(EmsegValueError, match="`planes` must be 1"):
        predict_image(model, cuboid, planes=2)
    with pytest.raises(EmsegValueError, match="needs a 2D network and a 3D"):
        predict_image(model, cuboid[0], planes=3)
    m3 = eval_model(
        tiny_config,
        spacing=ISOTROPIC,
        network={"dim": 3, "channels": [4, 8]},
        data__patch_shape=[8, 16, 16],
    )
    with pytest.raises(EmsegValueError, match="needs a 2D network"):
        predict_blockwise(m3, cuboid, planes=3, progress=False)


def test_orientation_config_is_validated(tiny_config):
    cfg = tiny_config(data__orientations=["zyx", "yzx", "xzy"])
    assert cfg.data.orientations == ("zyx", "yzx", "xzy")
    assert tiny_config().data.orientations == ("zyx",)
    with pytest.raises(ConfigError, match=r"data\.orientations"):
        tiny_config(data__orientations=["zyx", "zxz"])
    with pytest.raises(ConfigError, match=r"data\.orientations"):
        tiny_config(data__orientations=["zyx", "zyx"])
    with pytest.raises(ConfigError, match=r"data\.orientations"):
        tiny_config(data__orientations=[])


def test_orientation_samplers_draw_from_the_transposed_training_slab(rng):
    image = rng.integers(0, 255, size=(30, 40, 50), dtype=np.uint8)
    labels = np.arange(image.size, dtype=np.uint32).reshape(image.shape)  # voxel ids
    samplers = orientation_samplers(
        image,
        labels,
        orientations=("zyx", "yzx", "xzy"),
        patch_shape=(1, 32, 32),
        z_range=(5, 25),  # 20 sections: zx / zy patches are cropped to 16 (divisor 8)
        divisor=(8, 8),
    )
    assert [s.patch_shape for s in samplers] == [(1, 32, 32), (1, 16, 32), (1, 16, 32)]
    g = np.random.default_rng(0)
    for orientation, s in zip(("zyx", "yzx", "xzy"), samplers, strict=True):
        for _ in range(20):
            img, lab, _ = s.sample(g)
            ids = lab.ravel()
            z, y, x = np.unravel_index(ids, image.shape)
            # every voxel comes from the training slab and carries its own grey level
            assert z.min() >= 5
            assert z.max() < 25
            np.testing.assert_array_equal(img.ravel(), image[z, y, x])
            # the patch is one plane of the view: the sliced axis is constant
            sliced = {"zyx": z, "yzx": y, "xzy": x}[orientation]
            assert np.unique(sliced).size == 1
            # and its rows run along the view's second axis
            second = {"zyx": y, "yzx": z, "xzy": z}[orientation].reshape(lab.shape[1:])
            assert (np.diff(second, axis=0) == 1).all()
    with pytest.raises(EmsegValueError, match="needs a 3D image"):
        orientation_samplers(
            image[0], labels[0], orientations=("zyx", "yzx"), patch_shape=(1, 32, 32),
            z_range=(0, 1), divisor=(8, 8),
        )  # fmt: skip


def test_tri_planar_training_learns_boundaries_of_every_orientation(tiny_config, tmp_path):
    """Boundaries only visible across z: an xy-only model cannot learn them, a 3-view one can."""
    # slabs of 4 sections alternately labelled: boundaries are z faces only
    lab = np.repeat(np.arange(1, 9), 4)[:, None, None] * np.ones((1, 32, 32), np.uint16)
    rng = np.random.default_rng(3)
    img = np.where(np.isin(np.arange(32) % 4, (0, 3))[:, None, None], 60, 190)
    img = (img + rng.normal(0, 8, lab.shape)).clip(0, 255).astype(np.uint8)
    cfg = tiny_config(
        data={
            "class_names": ["background", "boundary"],
            "patch_shape": [1, 32, 32],
            "batch_size": 4,
            "foreground_fraction": 0.0,
            "orientations": ["zyx", "yzx", "xzy"],
        },
        network={"channels": [8, 16], "head": "boundary"},
        loss={"kind": "bce"},
        schedule={"steps": 60, "warmup_steps": 5},
        augment={"intensity_prob": 0.0, "noise_prob": 0.0, "blur_prob": 0.0},
        validation={"every": 1000},
    )
    res = train(cfg, tmp_path / "run", image=img, labels=lab, progress=False)
    target = np.isin(np.arange(32) % 4, (0, 3))
    target[0] = target[-1] = False  # the volume's own faces are no boundaries
    inner = slice(1, 31)
    # xy planes alone never show a z face as a boundary (their target there is 0) ...
    xy = predict_image(res.model, img, planes=1)[0].mean(axis=(1, 2))
    assert xy[target].max() < 0.25
    # ... the zx and zy views do: their mean separates z faces from the slabs' interiors
    tri = predict_image(res.model, img, planes=3)[0].mean(axis=(1, 2))
    assert tri[target].min() > 0.3
    assert tri[inner][~target[inner]].max() < 0.2
    assert ((tri > 0.25) == target)[inner].all()


def test_emseg_predict_planes_3_cli(tiny_config, cuboid, tmp_path, capsys):
    from emseg.cli import main
    from emseg.io import open_image, write_image

    model = eval_model(tiny_config, spacing=ISOTROPIC)
    model.save(tmp_path / "model")
    write_image(cuboid, tmp_path / "img.ome.zarr", spacing=(10.0, 10.0, 10.0))
    argv = ["predict", str(tmp_path / "model"), str(tmp_path / "img.ome.zarr"),
            str(tmp_path / "p.ome.zarr"), "--dtype", "float16", "--no-progress"]  # fmt: skip
    assert main([*argv, "--planes", "3"]) == 0
    got = np.asarray(open_image(tmp_path / "p.ome.zarr")[...], dtype=np.float32)
    ref = predict_image(Model.load(tmp_path / "model"), cuboid, planes=3)
    np.testing.assert_allclose(got, ref, atol=2e-3)  # float16 output
    assert np.abs(got - predict_image(model, cuboid)).max() > 1e-2  # not the xy-only map
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main([*argv, "--planes", "2"])
    assert "invalid choice" in capsys.readouterr().err
