"""Patch sampling, targets, augmentation and losses against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emseg.semantic.deep import (
    AugmentConfig,
    PatchSampler,
    affinity_target,
    augment_patch,
    boundary_target,
    class_positions,
    map_classes,
    segmentation_loss,
    soft_dice_loss,
)

GEOMETRIC = AugmentConfig(intensity_prob=0.0, noise_prob=0.0, blur_prob=0.0)


def test_map_classes_and_sparse_labels():
    raw = np.array([[0, 255, 7], [255, 0, 3]], dtype=np.uint8)
    got = map_classes(raw, label_map={0: 1, 255: 0}, ignore_label=None)
    np.testing.assert_array_equal(got, [[1, 0, -1], [0, 1, -1]])
    got = map_classes(raw, label_map={}, ignore_label=7)
    np.testing.assert_array_equal(got, [[0, 255, -1], [255, 0, 3]])


def test_boundary_and_affinity_targets_hand_computed():
    lab = np.array([[1, 1, 2], [1, 1, 2], [0, 0, 2]])
    b = boundary_target(lab, ndim=2)
    np.testing.assert_array_equal(b, [[0, 1, 1], [1, 1, 1], [1, 1, 1]])
    aff, mask = affinity_target(lab, [(0, 1), (1, 0)])
    # offset (0, 1): v and its right neighbour, same non-zero label
    np.testing.assert_array_equal(aff[0], [[1, 0, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(mask[0], [[1, 1, 0], [1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(aff[1], [[1, 1, 1], [0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(mask[1], [[1, 1, 1], [1, 1, 1], [0, 0, 0]])


def test_class_positions_and_balanced_sampling(rng):
    labels = np.zeros((6, 40, 40), np.uint8)
    labels[2:4, 30:34, 5:9] = 1  # a rare class: 32 voxels
    image = rng.random(labels.shape).astype(np.float32)
    pos = class_positions(
        labels, label_map={}, ignore_label=None, n_classes=2, z_range=(0, 6), samples_per_class=100
    )
    assert len(pos[1]) == 32
    assert (labels[tuple(pos[1].T)] == 1).all()
    assert len(pos[0]) == 100
    sampler = PatchSampler(
        image,
        labels,
        patch_shape=(1, 16, 16),
        z_range=(0, 6),
        positions=pos,
        foreground_fraction=1.0,
    )
    r = np.random.default_rng(0)
    for _ in range(20):
        img, lab, start = sampler.sample(r)
        assert img.shape == lab.shape == (1, 16, 16)
        assert lab.any()
        np.testing.assert_array_equal(
            img, image[start[0], start[1] : start[1] + 16, start[2] : start[2] + 16][None]
        )
    uniform = PatchSampler(image, labels, patch_shape=(1, 16, 16), z_range=(0, 2))
    for _ in range(20):
        _, _, start = uniform.sample(r)
        assert 0 <= start[0] < 2


def test_sampler_pads_small_volumes_and_reads_2d(rng):
    image = rng.random((10, 12)).astype(np.float32)
    labels = (image > 0.5).astype(np.uint8)
    s = PatchSampler(image, labels, patch_shape=(16, 16), z_range=(0, 1))
    img, lab, start = s.sample(np.random.default_rng(0))
    assert start == (0, 0, 0)
    np.testing.assert_array_equal(lab[0, :10, :12], labels)
    assert img.shape == (1, 16, 16)
    np.testing.assert_array_equal(img[0, :10, :12], image)
    np.testing.assert_array_equal(img[0, 10:, :12], image[::-1][:6])  # symmetric padding


def test_augmentation_is_deterministic_and_moves_labels_with_image(rng):
    labels = rng.integers(0, 4, (3, 24, 24)).astype(np.int64)
    image = labels.astype(np.float32) * 10
    cfg = AugmentConfig(
        elastic_prob=0.0,
        intensity_prob=0.0,
        noise_prob=0.0,
        blur_prob=0.0,
        misalignment_prob=1.0,
        missing_section_prob=0.0,
    )
    outs = set()
    for seed in range(12):
        a = augment_patch(image, labels, config=cfg, rng=np.random.default_rng(seed))
        b = augment_patch(image, labels, config=cfg, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], a[1] * 10.0)  # geometry identical for both
        assert sorted(np.unique(a[1])) == sorted(np.unique(labels))
        outs.add(a[0].tobytes())
    assert len(outs) > 6  # the transforms vary


def test_elastic_missing_section_and_intensity(rng):
    labels = np.zeros((4, 32, 32), np.int64)
    labels[:, 8:24, 8:24] = 1
    image = labels.astype(np.float32)
    cfg = AugmentConfig(
        flips=False,
        rot90=False,
        transpose=False,
        elastic_prob=1.0,
        elastic_alpha=3.0,
        intensity_prob=0.0,
        noise_prob=0.0,
        blur_prob=0.0,
        missing_section_prob=1.0,
    )
    img, lab = augment_patch(image, labels, config=cfg, rng=np.random.default_rng(3))
    assert not np.array_equal(lab, labels)  # deformed
    assert abs(int(lab.sum()) - int(labels.sum())) < 0.2 * labels.sum()
    flat = [z for z in range(4) if np.ptp(img[z]) == 0]
    assert len(flat) == 1  # one missing section, filled with the mean
    agree = (np.rint(img) == lab)[[z for z in range(4) if z not in flat]].mean()
    assert agree > 0.95
    ic = AugmentConfig(
        flips=False, rot90=False, transpose=False, intensity_prob=1.0, noise_prob=1.0, blur_prob=1.0
    )
    img2, lab2 = augment_patch(image, labels, config=ic, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(lab2, labels)
    assert img2.dtype == np.float32
    assert not np.allclose(img2, image)


def test_losses_hand_computed():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    target = torch.randint(0, 3, (2, 5, 5))
    target[0, 0, :] = -1
    mask = (target >= 0).float()
    ce = segmentation_loss(logits, target, mask, kind="ce")
    ref = F.cross_entropy(logits, target, ignore_index=-1)
    torch.testing.assert_close(ce, ref)
    w = [0.2, 1.0, 3.0]
    cew = segmentation_loss(logits, target, mask, kind="ce", class_weights=w)
    torch.testing.assert_close(
        cew, F.cross_entropy(logits, target, weight=torch.tensor(w), ignore_index=-1)
    )
    # dice: perfect prediction -> 0, disjoint -> 1
    onehot = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])[None]  # (1, 2, 1, 2)
    assert float(soft_dice_loss(onehot, onehot, torch.ones(1, 1, 1, 2))) == pytest.approx(
        0, abs=1e-5
    )
    assert float(soft_dice_loss(onehot.flip(1), onehot, torch.ones(1, 1, 1, 2))) == pytest.approx(
        1, abs=1e-5
    )
    dce = segmentation_loss(logits, target, mask, kind="dice_ce")
    assert float(dce) > float(ce)
    t = (torch.rand(2, 1, 4, 4) > 0.5).float()
    lg = torch.randn(2, 1, 4, 4)
    m = torch.ones_like(t)
    m[0] = 0
    bce = segmentation_loss(lg, t, m, kind="bce")
    torch.testing.assert_close(bce, F.binary_cross_entropy_with_logits(lg[1], t[1]))
