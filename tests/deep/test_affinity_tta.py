"""Test-time flips of an affinity model: channels are mapped back to their offsets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from emseg.errors import EmsegValueError
from emseg.semantic.deep import Member, affinity_target, predict_image, predict_members
from emseg.semantic.deep._infer import unflip_affinities

from ._helpers import eval_model

OFFSETS_3D = [[-1, 0, 0], [0, -1, 0], [0, 0, -2], [0, -3, 0], [-1, -1, 0]]


def _labels(rng, shape):
    lab = rng.integers(1, 4, size=shape)
    lab[lab == 3] = 0  # some background, whose affinities are 0
    return lab


@pytest.mark.parametrize("flipped", [(2,), (3,), (4,), (2, 3), (3, 4), (2, 3, 4)])
def test_unflip_recovers_exact_affinities(rng, flipped):
    # an exact "network": the affinities of the flipped labels in the flipped frame
    lab = _labels(rng, (5, 7, 6))
    truth, inside = affinity_target(lab, OFFSETS_3D)
    flipped_lab = np.flip(lab, [a - 2 for a in flipped])
    pred, _ = affinity_target(np.ascontiguousarray(flipped_lab), OFFSETS_3D)
    out, valid = unflip_affinities(torch.from_numpy(pred[None]), flipped, OFFSETS_3D)
    out, valid = out[0].numpy(), valid.numpy()
    for c, off in enumerate(OFFSETS_3D):
        axes = {a + 2 for a, o in enumerate(off) if o}
        if axes & set(flipped) and not axes <= set(flipped):
            assert not valid[c].any()  # a diagonal offset half flipped: not recoverable
            continue
        if not axes & set(flipped):
            assert valid[c].all()
        else:  # the last |o| voxels along the offset have no partner in the tile
            np.testing.assert_array_equal(valid[c], inside[c])
        m = valid[c] > 0
        assert m.any()
        np.testing.assert_array_equal(out[c][m], truth[c][m])
        assert not out[c][~m].any()


def test_tta_of_affinity_model_equals_hand_made_mean(tiny_config, rng):
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -3, 0]]
    model = eval_model(
        tiny_config,
        data={"class_names": ["a", "b", "c", "d"], "patch_shape": [8, 16, 16]},
        network={"dim": 3, "channels": [4, 8], "head": "affinities", "offsets": offsets},
        loss={"kind": "bce"},
    )
    vol = rng.integers(0, 255, size=(8, 16, 16), dtype=np.uint8)
    t = predict_image(model, vol, tta=True, tile_shape=(8, 16, 16))
    # by hand: predict each flipped volume, flip back, read offset channels at v + o
    total = np.zeros_like(t, dtype=np.float64)
    count = np.zeros_like(t, dtype=np.float64)
    for r in range(4):
        for axes in itertools.combinations((0, 1, 2), r):
            q = predict_image(
                model, np.ascontiguousarray(np.flip(vol, axes)), tile_shape=(8, 16, 16)
            )
            q = np.flip(q, [a + 1 for a in axes])
            for c, off in enumerate(offsets):
                a = next(i for i, o in enumerate(off) if o)
                if a not in axes:
                    total[c] += q[c]
                    count[c] += 1
                    continue
                k = -off[a]  # the value for v and v - k sits at v - k in the flipped-back map
                src = [slice(None)] * 3
                dst = [slice(None)] * 3
                src[a], dst[a] = slice(0, vol.shape[a] - k), slice(k, None)
                total[c][tuple(dst)] += q[c][tuple(src)]
                count[c][tuple(dst)] += 1
    np.testing.assert_allclose(t, total / count, atol=1e-5)
    # plain flip-and-average (the wrong thing for affinities) differs
    plain = np.mean(
        [
            np.flip(
                predict_image(
                    model, np.ascontiguousarray(np.flip(vol, ax)), tile_shape=(8, 16, 16)
                ),
                [a + 1 for a in ax],
            )
            for r in range(4)
            for ax in itertools.combinations((0, 1, 2), r)
        ],
        axis=0,
    )
    assert np.abs(plain - t).max() > 1e-3


def test_affinity_model_refuses_triplanar(tiny_config, rng):
    model = eval_model(
        tiny_config,
        data={"class_names": ["a", "b"]},
        network={"head": "affinities", "offsets": [[0, 0, -1], [0, -1, 0]]},
        loss={"kind": "bce"},
    )
    vol = rng.integers(0, 255, size=(4, 16, 16), dtype=np.uint8)
    with pytest.raises(EmsegValueError, match=r"affinity model.*planes=1"):
        predict_image(model, vol, planes=3)
    with pytest.raises(EmsegValueError, match="affinity model"):
        predict_members([Member(model, planes=3)], vol)
