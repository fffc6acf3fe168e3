"""Scores per predicted object: the file reader, evaluate(scores=) and `emseg evaluate --scores`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from emseg.cli._main import main
from emseg.errors import EmsegValueError
from emseg.evaluation import evaluate, read_scores
from emseg.metrics import coco_average_precision, mitoem_average_precision


def _pair() -> tuple[np.ndarray, np.ndarray]:
    t = np.zeros((4, 12, 12), np.uint32)
    t[:, :6, :6], t[:, :6, 6:], t[:, 6:, :6], t[:, 6:, 6:] = 1, 2, 3, 4
    p = t.copy()
    p[:, :6, 4:6] = 2  # 2 swallows a third of 1: IoU(1, 1) = 2/3, IoU(2, 2) = 36/48
    p[:, 6:, 9:] = 7  # 4 split in halves: IoU(4, 4) = IoU(4, 7) = 0.5
    return t, p


SCORES = {1: 0.4, 2: 0.9, 3: 0.7, 4: 0.2, 7: 0.8}


def test_read_scores_csv_tsv_whitespace_json(tmp_path):
    (tmp_path / "a.csv").write_text("label,score\n5,0.9\n7, 0.25\n\n")
    (tmp_path / "b.tsv").write_text("5\t0.9\n7\t0.25\n")
    (tmp_path / "c.txt").write_text("# id score\n5 0.9\n7 0.25\n")
    (tmp_path / "d.json").write_text(json.dumps({"5": 0.9, "7": 0.25}))
    for name in ("a.csv", "b.tsv", "c.txt", "d.json"):
        assert read_scores(tmp_path / name) == {5: 0.9, 7: 0.25}, name


@pytest.mark.parametrize(
    ("text", "name", "match"),
    [
        ("5,0.9\n5,0.1\n", "x.csv", "two scores"),
        ("5,abc\n", "x.csv", "a number"),
        ("0,0.5\n", "x.csv", "not an object"),
        ("5,nan\n", "x.csv", "finite"),
        ("5,0.1,3\n", "x.csv", "two columns"),
        ("label,score\n", "x.csv", "no \\(label, score\\)"),
        ("[1, 2]", "x.json", "JSON object"),
    ],
)
def test_read_scores_rejects_bad_files(tmp_path, text, name, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(EmsegValueError, match=match):
        read_scores(tmp_path / name)


def test_evaluate_with_and_without_scores():
    t, p = _pair()
    r = evaluate(t, p, task="instance", scores=SCORES, block_shape=(2, 5, 7), progress=False)
    ref = coco_average_precision(t, p, scores=SCORES)
    assert r.metrics["coco_map"] == pytest.approx(ref.map)
    assert r.metrics["coco_ap50"] == pytest.approx(ref.ap50)
    assert r.metrics["coco_ap75"] == pytest.approx(ref.ap75)
    assert r.metrics["mitoem_ap75"] == pytest.approx(ref.ap75)
    assert 0 < ref.map < 1
    # hand check at IoU 0.5: by score 2 (hit), 7 (IoU 0.5 with 4: hit), 3 (hit), 1 (hit),
    # 4 (4 already taken: miss) -> precision 1 up to recall 1 -> AP 1
    assert r.metrics["coco_ap50"] == pytest.approx(1.0)
    r0 = evaluate(t, p, task="instance", progress=False)
    assert r0.metrics["coco_map"] is None
    assert "scores" in r0.notes["coco_map"]
    assert r0.metrics["mitoem_ap75"] == pytest.approx(mitoem_average_precision(t, p))
    assert r0.metrics["map"] == r.metrics["map"]  # DSB map does not depend on scores
    with pytest.raises(EmsegValueError, match="no entry for predicted labels"):
        evaluate(t, p, task="instance", scores={1: 0.5}, progress=False)


def test_cli_scores_file(tmp_path):
    t, p = _pair()
    tifffile.imwrite(tmp_path / "t.tif", t, photometric="minisblack")
    tifffile.imwrite(tmp_path / "p.tif", p, photometric="minisblack")
    (tmp_path / "s.csv").write_text(
        "label,score\n" + "".join(f"{k},{v}\n" for k, v in SCORES.items())
    )
    out = tmp_path / "m.json"
    args = ["-q", "evaluate", str(tmp_path / "t.tif"), str(tmp_path / "p.tif"), "--task",
            "instance", "--spacing", "1", "1", "1", "--scores", str(tmp_path / "s.csv"),
            "--json", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    doc = json.loads(out.read_text())
    ref = coco_average_precision(t, p, scores=SCORES)
    assert doc["coco_map"] == pytest.approx(ref.map)
    assert doc["mitoem_ap75"] == pytest.approx(ref.ap75)
    assert "DSB" in doc["conventions"]["map"]
    assert "COCO" in doc["conventions"]["coco_map"]
