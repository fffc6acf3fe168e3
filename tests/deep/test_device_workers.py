"""Training and prediction devices, and training with batch workers: the same batches for
any worker count, exact resume, batch k is the serial draw from generator (seed, k), a missing
GPU or bad device refused before anything is written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from emseg.errors import EmsegValueError
from emseg.semantic.deep import resolve_device, train


def _cfg(tiny_config, steps=5):
    return tiny_config(
        network={"channels": [4, 8]},
        schedule={"steps": steps, "warmup_steps": 1},
        validation={"every": 100},
        checkpoint_every=100,
        threads=1,
        augment={"elastic_prob": 0.5, "noise_prob": 0.5},
    )


def _same_weights(a, b, atol=0.0):
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=atol)


def test_workers_give_the_same_run_for_any_count(tiny_config, tiny_em, tmp_path):
    image, labels = tiny_em
    cfg = _cfg(tiny_config)
    kw = {"image": image, "labels": labels, "progress": False, "device": "cpu"}
    one = train(cfg, tmp_path / "w1", workers=1, **kw)
    two = train(cfg, tmp_path / "w2", workers=2, **kw)
    _same_weights(one.model, two.model)
    assert [r["loss"] for r in one.history] == [r["loss"] for r in two.history]
    # the per-step batches are not the single-generator stream of workers=0
    serial = train(cfg, tmp_path / "w0", workers=0, **kw)
    assert [r["loss"] for r in serial.history] != [r["loss"] for r in one.history]
    assert one.model.provenance["device"] == "cpu"


def test_pool_batch_k_is_the_serial_draw_from_seed_k(tiny_config, tiny_em):
    """What a worker returns for step k equals _batch_arrays with default_rng([seed, k])."""
    from emseg.semantic.deep import _train as T
    from emseg.semantic.deep._data import estimate_intensity

    image, labels = tiny_em
    cfg = _cfg(tiny_config).replace(seed=7)
    run = T._Run(cfg, None, image, labels, None, None)  # type: ignore[arg-type]
    intensity = estimate_intensity(run.image, z_range=run.train_z, seed=cfg.seed)
    samplers = T.orientation_samplers(
        run.image,
        run.labels,
        orientations=cfg.data.orientations,
        patch_shape=cfg.data.patch_shape,
        z_range=run.train_z,
        divisor=(1, 4, 4),
        positions=None,
        foreground_fraction=0.0,
        in_memory=True,
    )
    pool = T._BatchPool(run, samplers, intensity, workers=2, first=3, last=5)
    try:
        got = [pool.get(k) for k in (3, 4, 5)]
        with pytest.raises(StopIteration):  # the loader ends at `last`
            pool.get(6)
    finally:
        pool.close()
    for k, arrays in zip((3, 4, 5), got, strict=True):
        want = T._batch_arrays(run, samplers, np.random.default_rng([7, k]), intensity)
        for a, b in zip(arrays, want, strict=True):
            np.testing.assert_array_equal(np.asarray(a), b)
    assert not np.array_equal(np.asarray(got[0][0]), np.asarray(got[1][0]))
    # steps are asked for in order
    pool = T._BatchPool(run, samplers, intensity, workers=1, first=1, last=3)
    try:
        with pytest.raises(AssertionError, match="the next is 1"):
            pool.get(2)
    finally:
        pool.close()


def test_resume_with_workers_is_exact(tiny_config, tiny_em, tmp_path):
    image, labels = tiny_em
    cfg = _cfg(tiny_config, steps=6)
    kw = {"image": image, "labels": labels, "progress": False, "device": "cpu", "workers": 2}
    full = train(cfg, tmp_path / "full", **kw)
    part = train(cfg, tmp_path / "part", stop_after=3, **kw)
    assert part.step == 3
    # the sampling scheme is part of the run: resuming with workers=0 is refused
    with pytest.raises(EmsegValueError, match="same choice"):
        train(cfg, tmp_path / "part", resume=True, **{**kw, "workers": 0})
    resumed = train(cfg, tmp_path / "part", resume=True, **{**kw, "workers": 1})
    assert resumed.step == 6
    _same_weights(full.model, resumed.model, atol=1e-6)
    assert [r["loss"] for r in full.history] == pytest.approx(
        [r["loss"] for r in resumed.history], abs=1e-6
    )


def test_device_names(monkeypatch, tiny_config, tiny_em, tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "tpu", "cuda:x", ""):
        with pytest.raises(EmsegValueError, match="'auto', 'cpu', 'cuda' or 'cuda:N'"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(EmsegValueError, match="sees no CUDA GPU"):
        resolve_device("cuda:0")
    image, labels = tiny_em
    out = tmp_path / "never"
    with pytest.raises(EmsegValueError, match="sees no CUDA GPU"):
        train(_cfg(tiny_config), out, image=image, labels=labels, progress=False, device="cuda")
    assert not out.exists()  # refused before anything is written
    with pytest.raises(EmsegValueError, match="`workers` must be an int >= 0"):
        train(_cfg(tiny_config), out, image=image, labels=labels, progress=False, workers=-1)
    assert not out.exists()


def test_in_memory_sampler_draws_the_lazy_sampler_patches(tiny_config, tiny_em):
    """The slab read for forked workers gives the same patches as sampling the volume lazily."""
    from emseg.semantic.deep import _train as T

    image, labels = tiny_em
    kw = {
        "orientations": ("zyx",),
        "patch_shape": (1, 32, 32),
        "z_range": (1, 4),
        "divisor": (1, 4, 4),
    }
    lazy = T.orientation_samplers(image, labels, **kw)[0]
    mem = T.orientation_samplers(image, labels, in_memory=True, **kw)[0]
    assert isinstance(mem.image, np.ndarray)
    assert mem.image.shape == (3, 64, 64)
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(5):
        a, b = lazy.sample(r1), mem.sample(r2)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_workers_train_from_a_compressed_tiff(tiny_config, tiny_em, tmp_path):
    """Forked workers must not share the handle of a lazily read (deflate) TIFF: reading the
    same file from several processes through one handle gave corrupt-data errors."""
    import tifffile

    image, labels = tiny_em
    big = np.tile(image, (4, 1, 1))  # 16 sections, so many reads interleave
    tifffile.imwrite(tmp_path / "im.tif", big, compression="zlib")
    tifffile.imwrite(tmp_path / "lab.tif", np.tile(labels, (4, 1, 1)), compression="zlib")
    base = _cfg(tiny_config, steps=8)
    data = dataclasses.replace(
        base.data,
        image=str(tmp_path / "im.tif"),
        labels=str(tmp_path / "lab.tif"),
        spacing=(40.0, 8.0, 8.0),
        batch_size=8,
    )
    cfg = base.replace(data=data)
    res = train(cfg, tmp_path / "run", progress=False, device="cpu", workers=2)
    assert res.step == 8
    assert np.isfinite([r["loss"] for r in res.history]).all()


def test_prediction_device(monkeypatch, tiny_config, tiny_em, tmp_path):
    """`device` reaches the network in memory and blockwise; a missing GPU is refused before
    an output is created, and "cpu" gives exactly the default's probabilities here."""
    from emseg.semantic.deep import Member, predict_blockwise, predict_image, predict_members
    from emseg.semantic.deep._infer import Predictor

    image, labels = tiny_em
    model = train(_cfg(tiny_config, steps=2), tmp_path / "m", image=image, labels=labels,
                  progress=False, device="cpu").model  # fmt: skip
    assert Predictor(model, device="cpu").device == torch.device("cpu")
    p_auto = predict_image(model, image[:2])
    np.testing.assert_array_equal(predict_image(model, image[:2], device="cpu"), p_auto)
    np.testing.assert_array_equal(predict_members([Member(model)], image[:2], device="cpu"), p_auto)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EmsegValueError, match="sees no CUDA GPU"):
        predict_image(model, image[:2], device="cuda")
    out = tmp_path / "p.ome.zarr"
    with pytest.raises(EmsegValueError, match="sees no CUDA GPU"):
        predict_blockwise(model, image[:2], out=str(out), device="cuda", progress=False)
    assert not out.exists()
    got = predict_blockwise(model, image[:2], device="cpu", dtype="float32", progress=False)
    np.testing.assert_allclose(np.asarray(got), p_auto, atol=1e-5)
