"""Ensembles of members with their own planes / tta: in memory and blockwise."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.errors import EmsegValueError
from emseg.semantic.deep import (
    Member,
    predict_blockwise,
    predict_image,
    predict_members,
)

from ._helpers import eval_model

ISOTROPIC = (10.0, 10.0, 10.0)
KW = {"tile_shape": None, "overlap": 0.5}


@pytest.fixture
def cuboid(rng):
    return rng.integers(0, 255, size=(10, 20, 28), dtype=np.uint8)


def _explicit(members, image, **kw):
    ps = [predict_image(m.model, image, planes=m.planes, tta=m.tta, **kw) for m in members]
    assert all(p.dtype == np.float32 for p in ps)
    return (sum(ps) / len(ps)).astype(np.float32), ps


def test_members_equal_the_mean_of_explicit_predictions(models, cuboid):
    m2, m3 = models
    members = [Member(m2, planes=3, tta=True), Member(m3, planes=1, tta=True)]
    ref, ps = _explicit(members, cuboid, overlap=0.5)
    out = predict_members(members, cuboid, overlap=0.5)
    assert out.dtype == np.float32
    assert out.shape == (2, 10, 20, 28)
    np.testing.assert_array_equal(out, ref)
    # the members really differ, so a wrong weighting or a dropped member shows
    assert np.abs(ps[0] - ps[1]).max() > 1e-2
    # one member is exactly that member's prediction
    np.testing.assert_array_equal(predict_members([members[1]], cuboid, overlap=0.5), ps[1])


def test_members_in_order_with_plain_flags(models, cuboid):
    m2, m3 = models
    members = [Member(m3), Member(m2, planes=3), Member(m2)]
    ref, _ = _explicit(members, cuboid)
    np.testing.assert_array_equal(predict_members(members, cuboid), ref)


@pytest.mark.parametrize("block_shape", [(4, 8, 12), (5, 20, 16), (10, 20, 28)])
def test_members_blockwise_equal_in_memory(models, cuboid, block_shape, tmp_path):
    m2, m3 = models
    members = [Member(m2, planes=3, tta=False), Member(m3, tta=True)]
    ref = predict_members(members, cuboid, overlap=0.5)
    out = predict_blockwise(
        members,
        cuboid,
        dtype="float32",
        overlap=0.5,
        block_shape=block_shape,
        chunks=block_shape,
        progress=False,
    )
    assert out.shape == ref.shape
    np.testing.assert_allclose(out[...], ref, atol=1e-5)


def test_members_blockwise_default_blocks_provenance(models, cuboid, tmp_path):
    from emseg.blockwise._output import _journal_of

    m2, m3 = models
    members = [Member(m2, planes=3), Member(m3, tta=True)]
    ref = predict_members(members, cuboid)
    out = predict_blockwise(
        members, cuboid, out=tmp_path / "p.ome.zarr", dtype="float32", progress=False
    )
    np.testing.assert_allclose(out[...], ref, atol=1e-5)
    params = _journal_of(out).params()
    name2 = m2.provenance.get("name", m2.config.name)
    assert params["members"] == [
        {"model": name2, "planes": 3, "tta": False},
        {"model": name2, "planes": 1, "tta": True},
    ]
    assert "model" not in params
    assert "tta" not in params


def test_members_blockwise_resume_skips_finished_blocks(models, cuboid, tmp_path, monkeypatch):
    from emseg.semantic.deep import _infer

    m2, m3 = models
    members = [Member(m2, planes=3), Member(m3)]
    ref = predict_members(members, cuboid, overlap=0.5)
    kw = {
        "out": tmp_path / "p.ome.zarr",
        "dtype": "float32",
        "overlap": 0.5,
        "block_shape": (5, 10, 14),
        "chunks": (5, 10, 14),
        "progress": False,
    }
    real = _infer.predict_planes
    calls = []

    def dies_in_block_3(*args, **kwargs):
        calls.append(kwargs["begin"])
        if len(calls) > 2 * 3:  # two members per block: blocks 0..2 finish, block 3 dies
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_infer, "predict_planes", dies_in_block_3)
    with pytest.raises(KeyboardInterrupt):
        predict_blockwise(members, cuboid, **kw)
    monkeypatch.setattr(_infer, "predict_planes", real)
    counted = []

    def counting(*args, **kwargs):
        counted.append(kwargs["begin"])
        return real(*args, **kwargs)

    monkeypatch.setattr(_infer, "predict_planes", counting)
    out = predict_blockwise(members, cuboid, resume=True, **kw)
    assert len(counted) == 2 * (8 - 3)  # 8 blocks, 3 finished before the interruption
    np.testing.assert_allclose(out[...], ref, atol=1e-5)
    # another ensemble is refused on resume (its parameters differ)
    with pytest.raises(EmsegValueError, match=r"cannot resume.*members"):
        predict_blockwise([Member(m3), Member(m2, planes=3)], cuboid, resume=True, **kw)


def test_member_validation(models, cuboid, tiny_config):
    m2, m3 = models
    with pytest.raises(EmsegValueError, match="needs a 2D network"):
        Member(m3, planes=3)
    with pytest.raises(EmsegValueError, match="`planes` must be 1"):
        Member(m2, planes=2)
    with pytest.raises(EmsegValueError, match="tta"):
        Member(m2, tta=1)  # type: ignore[arg-type]
    with pytest.raises(EmsegValueError, match="at least one"):
        predict_members([], cuboid)
    other_spacing = eval_model(tiny_config, spacing=(20.0, 10.0, 10.0))
    with pytest.raises(EmsegValueError, match="spacing"):
        predict_members([Member(m2), Member(other_spacing)], cuboid)
    three = eval_model(
        tiny_config,
        spacing=ISOTROPIC,
        data__class_names=["background", "membrane", "mito"],
    )
    with pytest.raises(EmsegValueError, match=r"members\[1\]"):
        predict_members([Member(m2), Member(three)], cuboid)
    with pytest.raises(EmsegValueError, match="needs a 2D network and a 3D"):
        predict_members([Member(m2, planes=3)], cuboid[0])
    with pytest.raises(EmsegValueError, match="needs a 2D network and a 3D"):
        predict_blockwise([Member(m2, planes=3)], cuboid[0], progress=False)
    with pytest.raises(EmsegValueError, match="each Member carries its own"):
        predict_blockwise([Member(m2)], cuboid, tta=True, progress=False)
    with pytest.raises(EmsegValueError, match="spacing"):
        predict_blockwise([Member(m2), Member(other_spacing)], cuboid, progress=False)
