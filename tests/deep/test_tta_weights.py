"""Test-time augmentation with the y <-> x transpose, and weighted ensemble members."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.errors import EmsegValueError
from emseg.semantic.deep import (
    Member,
    Predictor,
    predict_blockwise,
    predict_image,
    predict_members,
    tta_mode,
)

from ._helpers import eval_model


@pytest.fixture
def square(rng):
    """Y == X, so that the transposed image has the same tile grid."""
    return rng.integers(0, 255, size=(10, 24, 24), dtype=np.uint8)


@pytest.mark.parametrize("which", [0, 1], ids=["2d", "3d"])
def test_transpose_tta_is_the_mean_of_the_image_and_its_transpose(models, square, which):
    model = models[which]
    both = predict_image(model, square, tta="flips+transpose", overlap=0.5)
    flips = predict_image(model, square, tta=True, overlap=0.5)
    swapped = predict_image(model, np.ascontiguousarray(square.swapaxes(-1, -2)), tta=True,
                            overlap=0.5).swapaxes(-1, -2)  # fmt: skip
    assert both.dtype == np.float32
    assert both.shape == flips.shape
    np.testing.assert_allclose(both, (flips + swapped) / 2, atol=2e-6)
    # an untrained network is not transpose-equivariant: the two halves really differ
    assert np.abs(flips - swapped).max() > 1e-3
    # "flips" is True
    np.testing.assert_array_equal(predict_image(model, square, tta="flips", overlap=0.5), flips)


def test_transpose_tta_on_non_square_images_and_planes(models, rng):
    m2, _ = models
    img = rng.integers(0, 255, size=(12, 20, 28), dtype=np.uint8)
    out = predict_image(m2, img, tta="flips+transpose", planes=3)
    assert out.shape == (2, 12, 20, 28)
    assert np.isfinite(out).all()
    assert out.min() >= 0
    assert out.max() <= 1
    ref = predict_members([Member(m2, planes=3, tta="flips+transpose")], img)
    np.testing.assert_array_equal(out, ref)


def test_tta_mode_names_and_errors(models):
    assert [tta_mode(t) for t in (False, True, "flips", "flips+transpose")] == [
        "off",
        "flips",
        "flips",
        "flips+transpose",
    ]
    for bad in (1, "transpose", None, "yes"):
        with pytest.raises(EmsegValueError, match="flips\\+transpose"):
            tta_mode(bad)
    with pytest.raises(EmsegValueError, match="tta"):
        Predictor(models[0], tta="rotations")  # type: ignore[arg-type]


def test_transpose_tta_refused_for_affinities(tiny_config):
    aff = eval_model(
        tiny_config,
        data={"class_names": ["a", "b"], "patch_shape": [8, 16, 16]},
        network={"dim": 3, "channels": [4, 8], "head": "affinities",
                 "offsets": [[0, 0, -1], [0, -1, 0]]},
        loss={"kind": "bce"},
    )  # fmt: skip
    with pytest.raises(EmsegValueError, match="affinity model"):
        Predictor(aff, tta="flips+transpose")


def test_weighted_members_equal_the_hand_computed_mean(models, square):
    m2, m3 = models
    p2 = predict_image(m2, square, planes=3, tta=True)
    p3 = predict_image(m3, square, tta=True)
    out = predict_members([Member(m2, planes=3, tta=True, weight=2), Member(m3, tta=True)], square)
    np.testing.assert_array_equal(out, (np.float32(2) * p2 + p3) / np.float32(3))
    np.testing.assert_allclose(out, (2 * p2.astype(np.float64) + p3) / 3, atol=1e-6)
    # not the plain mean: the members differ, so a dropped weight shows
    assert np.abs(out - (p2 + p3) / 2).max() > 1e-3
    # equal weights are the plain mean, exactly (powers of two scale exactly)
    plain = predict_members([Member(m2, planes=3, tta=True), Member(m3, tta=True)], square)
    twos = predict_members(
        [Member(m2, planes=3, tta=True, weight=2), Member(m3, tta=True, weight=2)], square
    )
    np.testing.assert_array_equal(twos, plain)
    # one member of any weight is that member (exactly for a power of two)
    np.testing.assert_array_equal(predict_members([Member(m3, tta=True, weight=4)], square), p3)
    np.testing.assert_allclose(predict_members([Member(m3, tta=True, weight=3)], square), p3,
                               rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("block_shape", [(4, 8, 12), (10, 24, 24)])
def test_weighted_transposed_members_blockwise_equal_in_memory(models, square, block_shape,
                                                               tmp_path):  # fmt: skip
    from emseg.blockwise._output import _journal_of

    m2, m3 = models
    members = [Member(m2, planes=3, tta=True, weight=2.0), Member(m3, tta="flips+transpose")]
    ref = predict_members(members, square, overlap=0.5)
    out = predict_blockwise(
        members,
        square,
        out=tmp_path / "p.ome.zarr",
        dtype="float32",
        overlap=0.5,
        block_shape=block_shape,
        chunks=block_shape,
        progress=False,
    )
    np.testing.assert_allclose(out[...], ref, atol=1e-5)
    name = m2.provenance.get("name", m2.config.name)
    assert _journal_of(out).params()["members"] == [
        {"model": name, "planes": 3, "tta": True, "weight": 2.0},
        {"model": name, "planes": 1, "tta": "flips+transpose"},
    ]


def test_single_model_blockwise_transpose_tta(models, square):
    _, m3 = models
    ref = predict_image(m3, square, tta="flips+transpose", overlap=0.5)
    out = predict_blockwise(m3, square, tta="flips+transpose", dtype="float32", overlap=0.5,
                            block_shape=(5, 12, 24), chunks=(5, 12, 24), progress=False)  # fmt: skip
    np.testing.assert_allclose(out[...], ref, atol=1e-5)


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_member_weight_validation(models, weight):
    with pytest.raises(EmsegValueError, match="weight"):
        Member(models[0], weight=weight)  # type: ignore[arg-type]
