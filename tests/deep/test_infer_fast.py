"""The fast inference path: folded batch norms, bf16 weights, blending, MONAI equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emseg.semantic.deep import Intensity, Model, Predictor, gaussian_importance, predict_image
from emseg.semantic.deep._infer import inference_network
from emseg.semantic.deep._tiling import tile_grid


def _model(tiny_config, seed=0, **overrides):
    cfg = tiny_config(**overrides)
    m = Model.create(cfg, spacing=(8.0, 8.0, 8.0), intensity=Intensity(128.0, 40.0), seed=seed)
    # non-trivial batch-norm statistics and affine parameters, so that folding matters
    g = torch.Generator().manual_seed(seed + 1)
    for mod in m.network.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.5)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 2 + 0.2)
            mod.weight.data.copy_(torch.randn(mod.num_features, generator=g))
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
    m.network.eval()
    return m


NET_3D = {"dim": 3, "channels": [4, 8, 8]}
DATA_3D = {"class_names": ["bg", "a", "b"], "patch_shape": [16, 16, 16]}


@pytest.mark.parametrize(
    "network",
    [
        {"channels": [4, 8]},
        NET_3D,
        {**NET_3D, "residual": True},
    ],
)
def test_folded_network_equals_original(tiny_config, rng, network):
    overrides = {"network": network}
    if network.get("dim") == 3:
        overrides["data"] = DATA_3D
    model = _model(tiny_config, **overrides)
    net = model.network
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast, dtype = inference_network(net, precision="fp32")
    assert dtype == torch.float32
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    shape = (2, 1, 16, 16, 16) if network.get("dim") == 3 else (2, 1, 32, 32)
    x = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    with torch.inference_mode():
        ref = net(x)
        got = fast(x)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    # the model's own network is untouched (weights, batch norms, layout)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert all(p.is_contiguous() for p in net.parameters())


def test_in_place_activations_never_touch_the_input(rng):
    net = torch.nn.Sequential(
        torch.nn.LeakyReLU(0.1), torch.nn.Conv2d(1, 2, 3), torch.nn.LeakyReLU(0.1)
    ).eval()
    fast, _ = inference_network(net)
    assert not fast[0].inplace
    assert fast[2].inplace
    x = torch.from_numpy(rng.normal(size=(1, 1, 8, 8)).astype(np.float32))
    x0 = x.clone()
    with torch.inference_mode():
        got = fast(x)
        assert torch.equal(x, x0)
        np.testing.assert_allclose(got.numpy(), net(x).numpy(), rtol=1e-6, atol=1e-6)


def test_bf16_weights_and_accuracy(tiny_config, rng):
    model = _model(tiny_config, network=NET_3D, data=DATA_3D)
    p32 = Predictor(model, precision="fp32")
    p16 = Predictor(model, precision="bf16")
    assert p16.input_dtype == torch.bfloat16
    assert not p16.autocast
    assert all(p.dtype == torch.bfloat16 for p in p16.net.parameters())
    tiles = rng.normal(size=(2, 16, 16, 16)).astype(np.float32)
    a, b = p32(tiles), p16(tiles)
    assert a.dtype == b.dtype == np.float32
    assert a.shape == b.shape == (2, 3, 16, 16, 16)
    np.testing.assert_allclose(b.sum(axis=1), 1.0, atol=1e-5)
    diff = np.abs(a - b).max()
    assert 0 < diff < 0.05


def test_instance_norm_network_uses_autocast(tiny_config, rng):
    model = _model(tiny_config, network={**NET_3D, "norm": "instance"}, data=DATA_3D)
    pred = Predictor(model, precision="bf16")
    assert pred.input_dtype == torch.float32
    assert pred.autocast
    tiles = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)
    ref = Predictor(model, precision="fp32")(tiles)
    assert np.abs(pred(tiles) - ref).max() < 0.05


def _blend_by_hand(model, image, tile, overlap):
    """Independent blended prediction: unfused network, one tile at a time, float64 sums."""
    x = model.intensity.apply(image)
    grid = tile_grid(image.shape, tile, overlap)
    w = gaussian_importance(tile).astype(np.float64)
    acc = np.zeros((len(model.output_names), *image.shape))
    wsum = np.zeros(image.shape)
    net = model.network.eval()
    for z in grid[0]:
        for y in grid[1]:
            for xx in grid[2]:
                sl = (slice(z, z + tile[0]), slice(y, y + tile[1]), slice(xx, xx + tile[2]))
                with torch.inference_mode():
                    logits = net(torch.from_numpy(np.ascontiguousarray(x[sl]))[None, None])
                p = torch.softmax(logits, 1)[0].double().numpy()
                acc[(slice(None), *sl)] += p * w
                wsum[sl] += w
    return acc / wsum


@pytest.mark.parametrize("batch_size", [1, 3])
def test_predict_image_equals_hand_blending(tiny_config, rng, batch_size):
    model = _model(tiny_config, network=NET_3D, data=DATA_3D)
    vol = rng.integers(0, 255, size=(20, 28, 24), dtype=np.uint8)
    tile = (8, 16, 16)
    ref = _blend_by_hand(model, vol, tile, 0.25)
    got = predict_image(model, vol, tile_shape=tile, overlap=0.25, batch_size=batch_size)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.slow
def test_predict_image_equals_monai_sliding_window(tiny_config, rng):
    """MONAI's sliding_window_inference on the same grid and weights gives the same result.

    MONAI's own Gaussian map is centred on voxel ``roi // 2`` (off-centre for an even
    tile); emseg's is symmetric (centre ``(tile - 1) / 2``), so emseg's map is passed
    as MONAI's `roi_weight_map`: what is compared is the windows and the blending.
    """
    inferers = pytest.importorskip("monai.inferers")
    model = _model(tiny_config, network=NET_3D, data=DATA_3D)
    # sizes where MONAI's scan (interval int(16 * 0.75) = 12, last window flush with the end)
    # and emseg's global grid choose the same windows
    vol = rng.integers(0, 255, size=(28, 40, 16), dtype=np.uint8)
    tile = (16, 16, 16)
    x = torch.from_numpy(model.intensity.apply(vol))[None, None]
    net = model.network.eval()
    with torch.inference_mode():
        ref = inferers.sliding_window_inference(
            x,
            tile,
            2,
            lambda t: torch.softmax(net(t), 1),
            overlap=0.25,
            roi_weight_map=torch.from_numpy(gaussian_importance(tile)),
        )
    got = predict_image(model, vol, tile_shape=tile, overlap=0.25, batch_size=2)
    np.testing.assert_allclose(got, ref[0].numpy(), atol=1e-5)
