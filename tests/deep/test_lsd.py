"""Local shape descriptors: the blur against scipy, the descriptors against a brute-force sum
over each voxel's window and hand-computed values, and training with them as a second task."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from emseg.semantic.deep import (
    ConfigError,
    Model,
    local_shape_descriptors,
    n_lsd_channels,
    predict_image,
    train,
)
from emseg.semantic.deep._lsd import _blur, gaussian_matrix


def test_blur_matches_scipy_constant_mode():
    x = np.random.default_rng(0).random((9, 21, 17))
    sig = (1.2, 3.0, 2.4)
    mats = [gaussian_matrix(n, s, dtype=torch.float64) for n, s in zip(x.shape, sig, strict=True)]
    ours = _blur(torch.tensor(x)[None], mats)[0].numpy()
    ref = ndi.gaussian_filter(x, sig, mode="constant", truncate=3.0)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def _brute(lab, v, sigma_nm, spacing):
    """The descriptors of voxel v, summed directly over its (truncated) window."""
    nd = lab.ndim
    sig = [sigma_nm / s for s in spacing]
    rad = [int(3.0 * s + 0.5) for s in sig]
    w1 = []
    for s, r in zip(sig, rad, strict=True):
        w = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        w1.append(w / w.sum())
    tot, m, sec = 0.0, np.zeros(nd), np.zeros((nd, nd))
    for d in np.ndindex(*[2 * r + 1 for r in rad]):
        off = np.array(d) - np.array(rad)
        p = tuple(np.array(v) + off)
        if not all(0 <= p[i] < lab.shape[i] for i in range(nd)) or lab[p] != lab[v]:
            continue
        w = np.prod([w1[i][d[i]] for i in range(nd)])
        o = off * np.array(spacing) / sigma_nm
        tot += w
        m += w * o
        sec += w * np.outer(o, o)
    mean = m / tot
    cov = sec / tot - np.outer(mean, mean)
    pairs = [cov[i, j] for i in range(nd) for j in range(i + 1, nd)]
    return np.r_[
        tot,
        0.5 + 0.5 * np.clip(mean, -1, 1),
        np.clip(np.diag(cov), 0, 1),
        0.5 + 0.5 * np.clip(pairs, -1, 1),
    ]


@pytest.mark.parametrize("method", ["boxes", "dense"])
def test_descriptors_equal_brute_force_3d_anisotropic(method):
    zz, yy, xx = np.mgrid[:10, :24, :26]
    lab = np.ones((10, 24, 26), np.int64)
    lab[xx > 12] = 2
    lab[(2 * (zz - 5)) ** 2 + (yy - 12) ** 2 + (xx - 7) ** 2 < 30] = 7  # an ellipsoid in 1
    lab[:, :2] = 0  # unlabelled: no descriptors
    spacing, sigma = (20.0, 10.0, 10.0), 30.0
    d = local_shape_descriptors(
        torch.tensor(lab)[None], sigma_nm=sigma, spacing=spacing, method=method, budget=30_000
    )[0]  # a small budget: "dense" works in groups of 1 object
    assert d.shape == (10, 10, 24, 26)
    d = d.numpy()
    for v in [(5, 12, 7), (5, 12, 12), (5, 12, 13), (0, 2, 0), (9, 23, 25), (3, 8, 10)]:
        np.testing.assert_allclose(d[(slice(None), *v)], _brute(lab, v, sigma, spacing), atol=2e-6)
    assert (d[:, :, :2] == 0).all()


@pytest.mark.parametrize("method", ["boxes", "dense"])
def test_descriptors_equal_brute_force_2d(method):
    yy, xx = np.mgrid[:20, :18]
    lab = np.where(yy + xx < 18, 3, 5)
    d = local_shape_descriptors(
        torch.tensor(lab)[None], sigma_nm=16.0, spacing=(4.0, 4.0), method=method
    )[0]
    assert d.shape == (n_lsd_channels(2), 20, 18) == (6, 20, 18)
    for v in [(0, 0), (8, 9), (9, 9), (19, 17), (5, 14)]:
        np.testing.assert_allclose(
            d[(slice(None), *v)].numpy(), _brute(lab, v, 16.0, (4.0, 4.0)), atol=2e-6
        )


def test_hand_values_inside_and_at_a_face():
    """One object filling the window: volume 1, no offset, the truncated kernel's variance,
    no covariance. At the first voxel past a flat face the x-offset is the mean of the kernel's
    half k >= 0."""
    lab = np.ones((1, 40, 60), np.int64)
    lab[..., 30:] = 2
    d = local_shape_descriptors(torch.tensor(lab), sigma_nm=20.0, spacing=(5.0, 5.0))[0].numpy()
    k = np.arange(-12, 13)  # radius int(3 * 4 + 0.5) = 12 voxels
    w = np.exp(-0.5 * (k / 4.0) ** 2)
    w /= w.sum()
    var = (w * (k / 4.0) ** 2).sum()  # sigma units
    inside = d[:, 20, 15]  # >= 12 voxels from every edge of object 1
    np.testing.assert_allclose(inside, [1.0, 0.5, 0.5, var, var, 0.5], atol=1e-6)
    half = k >= 0
    mx = (w[half] * k[half] / 4.0).sum() / w[half].sum()
    face = d[:, 20, 30]  # object 2's first column
    assert face[0] == pytest.approx(w[half].sum(), abs=1e-6)
    assert face[2] == pytest.approx(0.5 + 0.5 * mx, abs=1e-6)
    assert face[1] == pytest.approx(0.5, abs=1e-6)


def _instances(seed=1):
    from emseg.data import synthetic_em

    s = synthetic_em((8, 32, 32), spacing=(10, 10, 10), seed=seed, cell_diameter=150)
    return s.image, s.cells


def _lsd_config(tiny_config, **network):
    return tiny_config(
        data={
            "class_names": ["background", "boundary"],
            "patch_shape": [8, 32, 32],
            "batch_size": 2,
            "foreground_fraction": 0.0,
            "spacing": [10.0, 10.0, 10.0],
        },
        network={"dim": 3, "channels": [4, 8], "head": "boundary", **network},
        loss={"kind": "dice_bce"},
        schedule={"steps": 3, "warmup_steps": 0},
    )


def test_training_with_descriptors(tiny_config, tmp_path):
    image, cells = _instances()
    plain = train(
        _lsd_config(tiny_config), tmp_path / "p", image=image, labels=cells, progress=False
    )
    cfg = _lsd_config(tiny_config, lsd_sigma_nm=40.0)
    res = train(cfg, tmp_path / "l", image=image, labels=cells, progress=False)
    # same seed, same batches, same main weights at step 1: the second task only adds
    assert res.history[0]["loss"] > plain.history[0]["loss"] + 1e-3
    assert np.isfinite([r["loss"] for r in res.history]).all()
    # saved with its second head; prediction is the boundary channel only
    loaded = Model.load(tmp_path / "l")
    assert loaded.network.aux_head is not None
    assert loaded.network.aux_head.out_channels == 10
    p = predict_image(loaded, image)
    assert p.shape == (1, *image.shape)
    np.testing.assert_array_equal(p, predict_image(res.model, image))
    # a plain model starts it: every tensor but the second head's weight and bias
    again = train(
        cfg.replace(init_from=str(tmp_path / "p")),
        tmp_path / "i",
        image=image,
        labels=cells,
        progress=False,
    )
    assert again.model.provenance["init_from"]["skipped"] == 2


def test_descriptors_need_instance_labels(tiny_config):
    with pytest.raises(ConfigError, match=r"lsd_sigma_nm.*boundary or affinities"):
        tiny_config(network={"lsd_sigma_nm": 80.0})
    with pytest.raises(ConfigError, match="lsd_sigma_nm"):
        tiny_config(network={"head": "boundary", "lsd_sigma_nm": -1.0}, loss={"kind": "bce"})


@pytest.mark.parametrize(
    "network",
    [
        {"dim": 2, "channels": [4, 8], "head": "boundary"},
        {"dim": 3, "channels": [4, 8], "head": "affinities", "offsets": [[0, 0, -1], [-1, 0, 0]]},
        {"dim": 3, "channels": [4, 8, 8], "head": "boundary", "deep_supervision": True},
    ],
    ids=["2d-boundary", "3d-affinities", "3d-deep-supervision"],
)
def test_descriptors_with_other_networks(tiny_config, tmp_path, network):
    """2D nets get 6 descriptor channels, affinity heads and deep supervision keep theirs."""
    image, cells = _instances()
    patch = [1, 32, 32] if network["dim"] == 2 else [8, 32, 32]
    cfg = tiny_config(
        data={
            "class_names": ["background", "boundary"],
            "patch_shape": patch,
            "batch_size": 2,
            "foreground_fraction": 0.0,
            "spacing": [10.0, 10.0, 10.0],
        },
        network={**network, "lsd_sigma_nm": 40.0},
        loss={"kind": "bce"},
        schedule={"steps": 2, "warmup_steps": 0},
    )
    res = train(cfg, tmp_path / "run", image=image, labels=cells, progress=False)
    assert np.isfinite([r["loss"] for r in res.history]).all()
    assert res.model.network.aux_head.out_channels == (6 if network["dim"] == 2 else 10)
    n_out = len(network.get("offsets", [])) or 1
    assert predict_image(res.model, image[:8]).shape == (n_out, *image[:8].shape)
