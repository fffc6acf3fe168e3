"""``emseg segment``: --list, a run on a file, and one-line errors."""

from __future__ import annotations

import numpy as np

from emseg.cli import main
from emseg.io import open_image, write_image

from .conftest import SPACING, make_preset


def test_segment_cli_runs_a_preset_directory_and_resumes(tmp_path, blob_data, forest_model_file,
                                                         capsys):  # fmt: skip
    image, truth = blob_data
    write_image(image, tmp_path / "img.ome.zarr", spacing=SPACING)
    preset = make_preset(tmp_path / "blobs", forest_model_file, method="watershed")
    args = ["segment", str(preset.path), str(tmp_path / "img.ome.zarr"), str(tmp_path / "out"),
            "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "4 objects (preset blobs)" in capsys.readouterr().out
    labels = open_image(tmp_path / "out" / "labels.ome.zarr")[:]
    assert labels.max() == 4
    inside = labels[truth == 1]
    assert len(np.unique(inside[inside > 0])) == 1
    assert main(args) == 2  # exists
    err = capsys.readouterr().err
    assert err.count("emseg segment: error") == 1
    assert "--overwrite" in err
    assert "Traceback" not in err
    assert main([*args, "--resume"]) == 0
    assert main([*args[:3], str(tmp_path / "out2"), "--spacing", "20", "10", "10"]) == 2
    assert "--rescale" in capsys.readouterr().err


def test_segment_cli_errors_and_list(tmp_path, capsys):
    assert main(["segment", "no-such-preset", "img.tif", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no-such-preset" in err
    assert "shipped:" in err
    assert main(["segment", "mitochondria"]) == 2
    assert "--list" in capsys.readouterr().err
    assert main(["segment", "--list"]) == 0
    out = capsys.readouterr().out
    from emseg.cli._segment import list_lines
    from emseg.presets import list_presets

    assert out.strip() == "\n".join(list_lines()).strip()
    for p in list_presets():
        assert f"{p.name}: {p.description}" in out
        assert "validation" in out


def test_list_lines_show_scores(tmp_path, forest_model_file, monkeypatch):
    from emseg.cli import _segment
    from emseg.presets import _preset

    make_preset(tmp_path / "blobs", forest_model_file)
    monkeypatch.setattr(_preset, "presets_dir", lambda: tmp_path)
    lines = _segment.list_lines()
    assert lines[0] == "blobs: dark blobs (test)"
    assert "  segments    blobs" in lines
    assert any("forest blob.safetensors (class 'blob'), trained at 10 x 10 x 10 nm" in x
               for x in lines)  # fmt: skip
    assert any("validation  ap50 1.000, pq 0.900  (test blobs)" in x for x in lines)


def test_list_lines_name_each_split_once():
    from emseg.cli._segment import _validation_where

    val = {"dataset": "lucchi_pp", "tuned_on": "z 60-79", "scored_on": "z 60-79 (the tuning split)"}
    assert _validation_where(val) == "lucchi_pp, scored on z 60-79 (the tuning split)"
    val = {"dataset": "flyem_medulla", "tuned_on": "z 60-79", "scored_on": "z 80-124"}
    assert _validation_where(val) == "flyem_medulla, scored on z 80-124, tuned on z 60-79"
    assert _validation_where({"dataset": "d"}) == "d"
    assert _validation_where({}) == "?"
