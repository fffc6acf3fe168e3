"""Training: a tiny model overfits, resume is exact, logs and checkpoints are written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from emseg.errors import EmsegValueError, OutputExistsError
from emseg.semantic.deep import Model, evaluate, lr_factor, train


def test_lr_schedule_hand_computed():
    assert lr_factor(0, steps=100, warmup=10, min_ratio=0.0) == pytest.approx(0.1)
    assert lr_factor(9, steps=100, warmup=10, min_ratio=0.0) == pytest.approx(1.0)
    assert lr_factor(10, steps=100, warmup=10, min_ratio=0.0) == pytest.approx(1.0)
    assert lr_factor(55, steps=100, warmup=10, min_ratio=0.0) == pytest.approx(0.5)
    assert lr_factor(100, steps=100, warmup=10, min_ratio=0.1) == pytest.approx(0.1)


def test_tiny_model_overfits(tiny_config, tiny_em, tmp_path):
    """40 steps on 4 sections: loss falls by 40 %, membrane IoU > 0.7 (chance is 0.36)."""
    image, labels = tiny_em
    res = train(
        tiny_config(),
        tmp_path / "run",
        image=image,
        labels=labels,
        val_image=image,
        val_labels=labels,
        progress=False,
    )
    losses = [r["loss"] for r in res.history]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert res.best["iou"] > 0.7
    # the saved final model predicts what the validation measured
    loaded = Model.load(tmp_path / "run")
    again = evaluate(loaded, image, labels)
    assert again["iou"] == pytest.approx(res.best["iou"], abs=1e-6)
    # logs, curves and checkpoints
    with open(tmp_path / "run" / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    assert rows[19]["val_iou"] != ""
    assert json.loads((tmp_path / "run" / "log.json").read_text())[-1]["step"] == 40
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.safetensors").is_file()
    assert loaded.provenance["validation"]["iou"] == pytest.approx(res.best["iou"])


def test_resume_is_exact(tiny_config, tiny_em, tmp_path):
    """N steps, stop, resume M more == N + M uninterrupted (parameters and AdamW moments)."""
    image, labels = tiny_em
    cfg = tiny_config(
        schedule={"steps": 6, "warmup_steps": 2},
        validation={"every": 3},
        checkpoint_every=100,
        augment={"elastic_prob": 0.5, "noise_prob": 0.5},
    )
    kw = {
        "image": image,
        "labels": labels,
        "val_image": image[:1],
        "val_labels": labels[:1],
        "progress": False,
    }
    full = train(cfg, tmp_path / "full", **kw)
    part = train(cfg, tmp_path / "part", stop_after=4, **kw)
    assert part.step == 4
    assert not (tmp_path / "part" / "model.safetensors").exists()  # not finished
    with pytest.raises(OutputExistsError):
        train(cfg, tmp_path / "part", **kw)
    resumed = train(cfg, tmp_path / "part", resume=True, **kw)
    assert resumed.step == 6
    a = full.model.network.state_dict()
    b = resumed.model.network.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert [r["loss"] for r in full.history] == pytest.approx(
        [r["loss"] for r in resumed.history], abs=1e-6
    )
    from emseg.semantic.deep import load_tensors

    oa = load_tensors(tmp_path / "full" / "checkpoints" / "last" / "optimizer.safetensors")
    ob = load_tensors(tmp_path / "part" / "checkpoints" / "last" / "optimizer.safetensors")
    assert oa.keys() == ob.keys()
    for k in oa:
        torch.testing.assert_close(oa[k], ob[k], rtol=0, atol=1e-6)
    # a different config is refused on resume
    with pytest.raises(EmsegValueError, match="config differs"):
        train(cfg.replace(seed=5), tmp_path / "part", resume=True, **kw)


def test_transfer_and_frozen_encoder(tiny_config, tiny_em, tmp_path):
    image, labels = tiny_em
    src = train(
        tiny_config(schedule={"steps": 3, "warmup_steps": 0}),
        tmp_path / "src",
        image=image,
        labels=labels,
        progress=False,
    ).model
    cfg = tiny_config(
        schedule={"steps": 3, "warmup_steps": 0},
        init_from=str(tmp_path / "src"),
        freeze_encoder=True,
    )
    res = train(cfg, tmp_path / "dst", image=image, labels=labels, progress=False)
    enc_src = src.network.encoders.state_dict()
    enc_dst = res.model.network.encoders.state_dict()
    for k, v in enc_src.items():
        if "running" in k or "num_batches" in k:
            continue  # batch-norm statistics still adapt to the new data
        torch.testing.assert_close(v, enc_dst[k], rtol=0, atol=0)
    # the decoder did train
    assert not torch.equal(src.network.head.weight, res.model.network.head.weight)
    assert res.model.provenance["init_from"]["copied"] > 0


@pytest.mark.parametrize(
    ("head", "loss", "extra"),
    [
        ("sigmoid", "dice_bce", {}),
        ("boundary", "bce", {}),
        ("affinities", "bce", {"offsets": [[0, 0, -1], [0, -1, 0]]}),
    ],
)
def test_other_heads_train_and_predict(tiny_config, tiny_em, tmp_path, head, loss, extra):
    image, labels = tiny_em
    from emseg.semantic.deep import predict_image

    cfg = tiny_config(
        network={"channels": [4, 8], "head": head, **extra},
        loss={"kind": loss},
        schedule={"steps": 2, "warmup_steps": 0},
    )
    res = train(cfg, tmp_path / head, image=image, labels=labels, progress=False)
    p = predict_image(res.model, image[:1])
    n = {"sigmoid": 1, "boundary": 1, "affinities": 2}[head]
    assert p.shape == (n, 1, 64, 64)
    assert p.dtype == np.float32
    assert (p >= 0).all()
    assert (p <= 1).all()


def test_3d_anisotropic_deep_supervision_trains(tiny_config, tiny_em, tmp_path):
    image, labels = tiny_em
    cfg = tiny_config(
        data={
            "class_names": ["background", "membrane"],
            "patch_shape": [4, 32, 32],
            "batch_size": 2,
            "foreground_fraction": 0.5,
            "spacing": [40.0, 8.0, 8.0],
        },
        network={
            "dim": 3,
            "channels": [4, 8, 8],
            "anisotropic": True,
            "deep_supervision": True,
            "norm": "group",
            "residual": True,
        },
        schedule={"steps": 2, "warmup_steps": 0},
        augment={"missing_section_prob": 1.0, "misalignment_prob": 1.0},
    )
    res = train(cfg, tmp_path / "3d", image=image, labels=labels, progress=False)
    assert res.model.network.plan.pools == ((1, 2, 2), (1, 2, 2))
    assert np.isfinite([r["loss"] for r in res.history]).all()
