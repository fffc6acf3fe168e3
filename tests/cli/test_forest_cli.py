"""``emseg forest train|predict`` end to end on a small synthetic volume."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.cli import main
from emseg.data import synthetic_em
from emseg.io import open_image, write_image
from emseg.semantic.forest import load_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("forest_cli")
    em = synthetic_em((6, 96, 96), seed=3, spacing=(40.0, 4.0, 4.0))
    truth = np.where(em.membranes, 2, 1).astype(np.uint8)
    rng = np.random.default_rng(1)
    scribbles = np.zeros_like(truth)
    for c in (1, 2):
        idx = np.flatnonzero(truth.ravel() == c)
        scribbles.flat[rng.choice(idx, 150, replace=False)] = c
    write_image(em.image, root / "img.ome.zarr", spacing=em.spacing)
    write_image(scribbles, root / "scribbles.ome.zarr", spacing=em.spacing, labels=True)
    return root, em, truth


def test_train_then_predict(files, capsys):
    root, em, truth = files
    model = root / "m.safetensors"
    argv = [
        "forest", "train", "--image", str(root / "img.ome.zarr"),
        "--labels", str(root / "scribbles.ome.zarr"), "--out", str(model),
        "--scales", "4", "8", "16", "--mode", "2d", "--trees", "20", "--autocontext", "2",
        "--class-names", "cytoplasm", "membrane",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "2 classes" in capsys.readouterr().out
    m = load_model(model)
    assert m.class_names == ("cytoplasm", "membrane")
    assert len(m.stages) == 2
    assert m.provenance["autocontext_training"] == "out-of-fold (2 folds by stroke)"
    assert m.spacing == (40.0, 4.0, 4.0)
    # refuses to overwrite the model
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    out, cls = root / "p.ome.zarr", root / "c.ome.zarr"
    argv = [
        "forest", "predict", str(model), str(root / "img.ome.zarr"), str(out),
        "--class-map", str(cls), "--workers", "2", "--chunks", "3", "48", "48", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    probs = open_image(out)
    assert probs.shape == (2, 6, 96, 96)
    np.testing.assert_allclose(probs[:], m.predict_proba(em.image), atol=1e-6)
    classes = open_image(cls)[:]
    iou = ((classes == 2) & (truth == 2)).sum() / ((classes == 2) | (truth == 2)).sum()
    assert iou > 0.4
    # existing output without --overwrite / --resume: a clear one-line error
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0


def test_predict_refuses_other_spacing_and_bad_model(files, tmp_path, capsys):
    root, _, _ = files
    model = tmp_path / "m.safetensors"
    assert main([
        "forest", "train", "--image", str(root / "img.ome.zarr"),
        "--labels", str(root / "scribbles.ome.zarr"), "--out", str(model),
        "--scales", "8", "--features", "gaussian", "hessian", "--trees", "5",
    ]) == 0  # fmt: skip
    argv = [
        "forest",
        "predict",
        str(model),
        str(root / "img.ome.zarr"),
        str(tmp_path / "p.ome.zarr"),
    ]
    assert main([*argv, "--spacing", "40", "8", "8", "--no-progress"]) == 2
    assert "rescale" in capsys.readouterr().err
    assert main([*argv, "--spacing", "40", "8", "8", "--rescale", "--no-progress"]) == 0
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"\x80\x04\x95 not a model")
    assert (
        main(
            [
                "forest",
                "predict",
                str(bogus),
                str(root / "img.ome.zarr"),
                str(tmp_path / "q.ome.zarr"),
            ]
        )
        == 2
    )
    assert "not an emseg forest model file" in capsys.readouterr().err


def test_train_autocontext_folds(files, tmp_path, capsys):
    root, _, _ = files
    argv = [
        "forest", "train", "--image", str(root / "img.ome.zarr"),
        "--labels", str(root / "scribbles.ome.zarr"), "--out", str(tmp_path / "h.safetensors"),
        "--scales", "4", "--mode", "2d", "--trees", "5", "--autocontext", "2",
        "--autocontext-folds", "halves",
    ]  # fmt: skip
    assert main(argv) == 0
    m = load_model(tmp_path / "h.safetensors")
    assert m.provenance["autocontext_training"] == "out-of-fold (2 folds by z half)"
    assert len(m.stages) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*argv[:-1], "thirds"])
    assert "invalid choice: 'thirds'" in capsys.readouterr().err
