"""``emseg evaluate``: JSON equal to the library, binary / multi-class inputs, report, error maps."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
import tifffile

from emseg.cli._main import main
from emseg.evaluation import ERROR_CODES, METRIC_KEYS, error_codes, evaluate
from emseg.io import open_image


def _pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    t = ndimage.zoom(rng.integers(1, 12, (2, 4, 4)), (3, 6, 6), order=0).astype(np.uint32)
    t[:, :2] = 0
    p = np.roll(t, 1, axis=2)
    p[p == 5] = 9
    return t, p


def _write(tmp_path, name, arr):
    path = tmp_path / name
    tifffile.imwrite(path, arr, photometric="minisblack", metadata=None)
    return str(path)


def _json(path) -> dict:
    return json.loads(path.read_text())


def test_json_keys_and_values_match_library(tmp_path, rng):
    t, p = _pair(rng)
    ft, fp = _write(tmp_path, "t.tif", t), _write(tmp_path, "p.tif", p)
    out = tmp_path / "m.json"
    args = ["evaluate", ft, fp, "--spacing", "40", "4", "4", "--json", str(out), "--no-progress",
            "--block", "4", "10", "12"]  # fmt: skip
    assert main(["-q", *args]) == 0
    doc = _json(out)
    for k in METRIC_KEYS:
        assert k in doc
    ref = evaluate(t, p, spacing=(40, 4, 4), progress=False, objects=False).to_json()
    for k in METRIC_KEYS:
        if ref[k] is None:
            assert doc[k] is None, k
        else:
            assert doc[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-15), k
    assert doc["conventions"]["order"] == "truth, prediction"
    assert doc["pixel_error"] is None
    assert "probability" in doc["notes"]["pixel_error"]
    assert doc["spacing"] == [40.0, 4.0, 4.0]
    # refuses to overwrite, one clear error line, exit status 2
    assert main(["-q", *args]) == 2


def test_binary_0_255_masks_semantic_keys_are_foreground_scores(tmp_path, rng):
    t = (rng.random((4, 16, 16)) < 0.5).astype(np.uint8) * 255
    p = (rng.random((4, 16, 16)) < 0.5).astype(np.uint8) * 255
    out = tmp_path / "b.json"
    assert main(["-q", "evaluate", _write(tmp_path, "t.tif", t), _write(tmp_path, "p.tif", p),
                 "--task", "semantic", "--spacing", "1", "1", "1", "--json", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    doc = _json(out)
    tf, pf = t > 0, p > 0
    tp, fp, fn = (tf & pf).sum(), (~tf & pf).sum(), (tf & ~pf).sum()
    assert doc["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert doc["precision"] == pytest.approx(tp / (tp + fp))
    assert "per_class" not in doc
    assert doc["voi_split"] is None


def test_multiclass_has_per_class(tmp_path, rng):
    t = rng.integers(0, 3, (3, 12, 12)).astype(np.uint8)
    p = np.where(rng.random(t.shape) < 0.8, t, 0).astype(np.uint8)
    out = tmp_path / "c.json"
    assert main(["-q", "evaluate", _write(tmp_path, "t.tif", t), _write(tmp_path, "p.tif", p),
                 "--classes", "1", "2", "--spacing", "1", "1", "1", "--json", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    doc = _json(out)
    assert sorted(doc["per_class"]) == ["1", "2"]
    for c in (1, 2):
        # no false positives for class c (prediction is t or 0): precision 1
        assert doc["per_class"][str(c)]["precision"] == 1.0
        rec = ((p == c) & (t == c)).sum() / (t == c).sum()
        assert doc["per_class"][str(c)]["recall"] == pytest.approx(rec)
    assert "macro" in doc["conventions"]["semantic_average"]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_report_is_one_self_contained_html_with_tables_and_csv(tmp_path, rng):
    t, p = _pair(rng)
    ft, fp = _write(tmp_path, "t.tif", t), _write(tmp_path, "p.tif", p)
    report = tmp_path / "out" / "report.html"
    maps = tmp_path / "out" / "errors.ome.zarr"
    assert main(["-q", "evaluate", ft, fp, "--spacing", "40", "4", "4", "--report", str(report),
                 "--error-maps", str(maps), "--no-progress"]) == 0  # fmt: skip
    text = report.read_text()
    parser = _Collect()
    parser.feed(text)
    imgs = [a for tag, a in parser.tags if tag == "img"]
    assert len(imgs) >= 2  # worst sections + morphology
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    for tag, a in parser.tags:
        for attr in ("src", "href"):
            assert not str(a.get(attr, "")).startswith(("http:", "https:", "//")), (tag, a)
    ids = {a.get("id") for tag, a in parser.tags if tag == "table"}
    assert {"metrics", "truth_objects", "prediction_objects", "morphology"} <= ids
    assert "sortTable" in text
    import pandas as pd

    objs = pd.read_csv(tmp_path / "out" / "report_objects_truth.csv")
    assert sorted(objs["label"]) == sorted(int(v) for v in np.unique(t) if v)
    assert {"bbox_z0", "centroid_x_nm", "best_iou", "n_split", "n_merged"} <= set(objs.columns)
    # error maps reopen with open_image and equal the codes computed in memory
    em = open_image(str(maps)).read()
    assert em.dtype == np.uint8
    r = evaluate(t, p, progress=False, objects=False, geometric=False)
    from emseg.evaluation._errormaps import _best_lookup

    np.testing.assert_array_equal(em, error_codes(t, p, lookup=_best_lookup(r.overlap)))
    assert ((em == 2) == ((t == 0) & (p != 0))).all()
    assert ((em == 3) == ((t != 0) & (p == 0))).all()


def test_error_codes_tiny_hand_case(tmp_path):
    # truth: object 1 (left 4 px), object 2 (right 2 px); prediction: 5 covers all of 1 and one
    # pixel of 2, 6 covers the other pixel of 2; one FP, one FN.
    t = np.array([[0, 1, 1, 1, 1, 2, 2, 3]], np.uint16)
    p = np.array([[7, 5, 5, 5, 5, 5, 6, 0]], np.uint16)
    ft, fp = _write(tmp_path, "t.tif", t), _write(tmp_path, "p.tif", p)
    maps = tmp_path / "e.zarr"
    assert main(["-q", "evaluate", ft, fp, "--spacing", "1", "1", "--error-maps", str(maps),
                 "--task", "instance", "--no-progress", "--no-geometric"]) == 0  # fmt: skip
    em = open_image(str(maps)).read()
    # best(1) = 5, best(5) = 1 -> correct; pixel (2, 5): p = 5 = best(2)? IoU(2,5)=1/6,
    # IoU(2,6)=1/2 -> best(2) = 6, so p=5 != best(2): split; (2, 6): best(6)=2: correct
    assert em.tolist() == [[2, 1, 1, 1, 1, 4, 1, 3]]
    assert ERROR_CODES[4] == "split"
    # a merge: predicted 5 covers truth 1 (4 px) and all of truth 2 (2 px)
    p2 = np.array([[0, 5, 5, 5, 5, 5, 5, 0]], np.uint16)
    r = evaluate(t, p2, progress=False, objects=False, geometric=False)
    from emseg.evaluation._errormaps import _best_lookup

    codes = error_codes(t, p2, lookup=_best_lookup(r.overlap))
    assert codes.tolist() == [[0, 1, 1, 1, 1, 5, 5, 3]]


def test_float_prediction_probabilities(tmp_path, rng):
    t = (rng.random((2, 16, 16)) < 0.5).astype(np.uint8)
    prob = np.clip(t * 0.6 + rng.random(t.shape) * 0.5, 0, 1).astype(np.float32)
    out = tmp_path / "f.json"
    assert main(["-q", "evaluate", _write(tmp_path, "t.tif", t), _write(tmp_path, "p.tif", prob),
                 "--spacing", "1", "1", "1", "--json", str(out), "--no-progress"]) == 0  # fmt: skip
    doc = _json(out)
    from emseg.metrics import pixel_error

    assert doc["pixel_error"] == pytest.approx(pixel_error(t, prob).pixel_error)
    assert doc["isbi_vrand"] is not None
    assert math.isfinite(doc["dice"])


def test_bad_input_is_one_line_error(tmp_path, capsys):
    t = np.zeros((4, 4), np.uint8)
    ft = _write(tmp_path, "t.tif", t)
    fp = _write(tmp_path, "p.tif", np.zeros((4, 5), np.uint8))
    assert main(["evaluate", ft, fp, "--spacing", "1", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "same shape" in err
    assert "Traceback" not in err
