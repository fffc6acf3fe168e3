"""``emseg train`` / ``predict`` / ``models`` end to end on a tiny synthetic OME-Zarr."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emseg.cli import main
from emseg.data import synthetic_em
from emseg.io import open_image, write_image
from emseg.semantic.deep import list_models


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("deep_cli")
    em = synthetic_em((4, 64, 64), seed=2, spacing=(40.0, 8.0, 8.0), membrane_thickness=30)
    write_image(em.image, root / "img.ome.zarr", spacing=em.spacing)
    write_image(
        em.membranes.astype(np.uint8), root / "lab.ome.zarr", spacing=em.spacing, labels=True
    )
    (root / "tiny.yaml").write_text(
        "name: tiny\n"
        "data:\n  image: img.ome.zarr\n  labels: lab.ome.zarr\n"
        "  class_names: [background, membrane]\n  patch_shape: [1, 32, 32]\n"
        "  batch_size: 2\n  train_z: [0, 3]\n  val_z: [3, 4]\n"
        "network:\n  channels: [4, 8]\n"
        "schedule:\n  steps: 5\n  warmup_steps: 1\n"
        "validation:\n  every: 5\ncheckpoint_every: 5\nthreads: 1\n"
    )
    return root, em


def test_train_predict_models(files, capsys, tmp_path):
    root, em = files
    n = torch.get_num_threads()
    try:
        argv = ["train", str(root / "tiny.yaml"), str(tmp_path / "run"), "--no-progress"]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    assert "finished step 5" in out
    assert "iou=" in out
    assert (tmp_path / "run" / "model.safetensors").is_file()
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["spacing"] == [40.0, 8.0, 8.0]
    # an existing run is refused without --overwrite / --resume
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err

    pred = [
        "predict",
        str(tmp_path / "run"),
        str(root / "img.ome.zarr"),
        str(tmp_path / "p.ome.zarr"),
        "--class-map",
        str(tmp_path / "c.ome.zarr"),
        "--no-progress",
        "--workers",
        "1",
    ]
    assert main(pred) == 0
    assert "2 channels (background, membrane)" in capsys.readouterr().out
    p = open_image(tmp_path / "p.ome.zarr")
    assert p.shape == (2, 4, 64, 64)
    assert p.dtype == np.float16
    assert p.spacing == (40.0, 8.0, 8.0)
    from emseg.semantic.deep import load_model, predict_image

    ref = predict_image(load_model(tmp_path / "run"), em.image)
    np.testing.assert_allclose(p[...].astype(np.float32), ref, atol=1e-3)
    c = open_image(tmp_path / "c.ome.zarr")[...]
    assert (c == np.argmax(p[...], axis=0)).mean() > 0.99  # float16 ties aside
    # refusing to overwrite, then --overwrite
    assert main(pred) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main([*pred, "--overwrite"]) == 0
    capsys.readouterr()
    # --tta alone is flips; --tta flips+transpose adds the y <-> x transpose
    model = load_model(tmp_path / "run")
    for tta in ("flips", "flips+transpose"):
        flag = ["--tta"] if tta == "flips" else ["--tta", tta]
        assert main([*pred[:4], "--no-progress", "--overwrite", *flag]) == 0
        ref = predict_image(model, em.image, tta=tta)
        np.testing.assert_allclose(open_image(tmp_path / "p.ome.zarr")[...].astype(np.float32),
                                   ref, atol=1e-3)  # fmt: skip
    assert np.abs(ref - predict_image(model, em.image, tta=True)).max() > 1e-3
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main([*pred[:4], "--tta", "rotate"])
    assert "flips+transpose" in capsys.readouterr().err

    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    # every shipped model is listed with its validation scores, a refit with why it has none
    shown = {c.name: listing.split(f"{c.name}: ", 1)[1].split("\n")[3] for c in list_models()}
    for card in list_models():
        iou = (card.card.get("validation") or {}).get("iou")
        if iou is not None:
            assert f"iou={iou:.4f}" in shown[card.name]
    refit = shown["boundaries-fibsem-refit"]
    assert refit.startswith("  validation: none: a refit on training + validation data")
    assert main(["predict", "no-such-model", str(root / "img.ome.zarr"), str(tmp_path / "x")]) == 2
    assert "shipped" in capsys.readouterr().err


def test_resume_via_cli(files, capsys, tmp_path):
    root, _ = files
    n = torch.get_num_threads()
    try:
        base = ["train", str(root / "tiny.yaml"), str(tmp_path / "run"), "--no-progress"]
        assert main([*base, "--stop-after", "3"]) == 0
        assert "stopped at step 3" in capsys.readouterr().out
        assert main([*base, "--resume"]) == 0
        assert "finished step 5" in capsys.readouterr().out
    finally:
        torch.set_num_threads(n)
    rows = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]


def test_bad_config_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("network:\n  channels: [4, 8]\n  depth: 3\n")
    assert main(["train", str(tmp_path / "bad.yaml"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "`network.depth`" in err
    assert "Traceback" not in err


@pytest.mark.data
def test_predict_with_the_shipped_membrane_model_by_name(data_root, tmp_path, capsys):
    """`emseg predict membranes-2d IMAGE OUT` on ISBI validation sections (no network access)."""
    from emseg.metrics import pixel_error

    img = open_image(data_root / "isbi2012" / "train-volume.tif", spacing=(50.0, 4.0, 4.0))
    lab = open_image(data_root / "isbi2012" / "train-labels.tif", spacing=(50.0, 4.0, 4.0))
    box = (slice(24, 26), slice(0, 256), slice(0, 256))
    src = tmp_path / "isbi.ome.zarr"
    write_image(np.asarray(img[box]), src, spacing=(50.0, 4.0, 4.0))
    out = tmp_path / "membranes.ome.zarr"
    assert main(["predict", "membranes-2d", str(src), str(out), "--no-progress"]) == 0
    probs = np.asarray(open_image(out)[:], dtype=np.float32)  # (class, z, y, x), float16 file
    assert probs.shape == (2, 2, 256, 256)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=2e-3)
    # ISBI labels: 255 = cell interior
    truth = np.asarray(lab[box]) > 0
    assert pixel_error(truth, probs[1]).pixel_error < 0.06  # 0.035 here; constant 0.5: 0.103
