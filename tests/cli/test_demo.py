"""``emseg demo``: outputs exist, reopen with the right geometry, refuse to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emseg.cli import main
from emseg.io import open_image


def test_demo_writes_reopenable_outputs_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--shape", "8", "64", "64", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    syn = summary["steps"]["synthesize"]
    assert syn["shape"] == [8, 64, 64]
    assert syn["spacing"] == [40.0, 4.0, 4.0]
    assert (out / "preview.png").stat().st_size > 1000

    image = open_image(out / "synthetic" / "image.ome.zarr")
    assert image.shape == (8, 64, 64)
    assert image.dtype == np.uint8
    assert image.spacing == (40.0, 4.0, 4.0)
    cells = open_image(out / "synthetic" / "cells.ome.zarr")
    assert cells.spacing == (40.0, 4.0, 4.0)
    c = cells[:]
    assert c.shape == (8, 64, 64)
    assert len(np.unique(c)) == syn["counts"]["cells"]
    assert c.max() == syn["cell_ids_max"]
    assert (c > 0).all()
    classes = open_image(out / "synthetic" / "classes.ome.zarr")[:]
    for i, name in enumerate(syn["class_names"]):
        assert abs((classes == i).mean() - syn["class_fractions"][name]) < 1e-9
    membranes = open_image(out / "synthetic" / "membranes.ome.zarr")[:]
    np.testing.assert_array_equal(membranes > 0, classes == 1)
    mito = open_image(out / "synthetic" / "mitochondria.ome.zarr")[:]
    assert len(np.unique(mito[mito > 0])) == syn["counts"]["mitochondria"]
    paths = summary["steps"]["write"]["paths"]
    assert set(paths) == {"image", "cells", "membranes", "mitochondria", "vesicles", "nucleus",
                          "classes"}  # fmt: skip
    for path in paths.values():
        assert Path(path).exists()

    # measure -> catalog -> query
    # forest -> segment -> evaluate: the predicted mitochondria are what gets measured
    seg = summary["steps"]["segment"]
    predicted = open_image(seg["labels"])
    assert predicted.dtype == np.uint64
    assert predicted.spacing == (40.0, 4.0, 4.0)
    assert predicted.attrs["emseg"]["preset"] == "demo-mitochondria"
    assert int(predicted[:].max()) == seg["n_objects"]
    ev = summary["steps"]["evaluate"]
    assert ev["n_predicted"] == seg["n_objects"]
    assert ev["n_truth"] == syn["counts"]["mitochondria"]
    assert (out / "evaluation" / "report.html").stat().st_size > 1000
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["ap50"] == ev["metrics"]["ap50"]
    from emseg.presets import load_preset

    preset = load_preset(out / "preset")
    assert preset.kind == "forest"
    assert preset.method == "components"
    counts = summary["steps"]["measure"]["objects"]
    assert counts["cells"] == syn["counts"]["cells"]
    assert counts["mitochondria"] == seg["n_objects"]
    from emseg.morphometry import read_table

    for name, n in counts.items():
        for ext in ("parquet", "csv"):
            table = read_table(out / "morphometry" / f"{name}.{ext}")
            assert len(table) == n
    cells_table = read_table(out / "morphometry" / "cells.parquet")
    np.testing.assert_array_equal(
        np.sort(cells_table["voxel_count"]),
        np.sort(np.bincount(c.ravel())[1:][np.bincount(c.ravel())[1:] > 0]),
    )
    from emseg.catalog import open_catalog

    with open_catalog(out / "catalog.sqlite", create=False) as cat:
        assert len(cat) == sum(counts.values()) == summary["steps"]["catalog"]["objects"]
        assert sorted(cat.datasets()["name"]) == sorted(counts)
    query = summary["steps"]["query"]
    mito = read_table(out / "morphometry" / "mitochondria.parquet")
    assert len(query["label"]["ids"]) == min(5, int((mito["volume_nm3"] > 1e5).sum()))
    assert "label query: class = mitochondrion" in printed
    assert "proximity: mitochondria within 500 nm of the nucleus" in printed
    assert "image-based" in printed
    for line in query["answers"]:
        assert line in printed

    # the same image as the library makes
    from emseg.data import synthetic_em

    np.testing.assert_array_equal(image[:], synthetic_em((8, 64, 64), seed=2).image)

    status = main(["demo", "--out", str(out), "--shape", "8", "64", "64"])
    err = capsys.readouterr().err
    assert status == 2
    lines = [line for line in err.splitlines() if line.startswith("emseg demo: error")]
    assert len(lines) == 1
    assert "--overwrite" in lines[0]
    assert "Traceback" not in err

    assert main(["demo", "--out", str(out), "--shape", "8", "64", "64", "--overwrite"]) == 0


def test_demo_steps_are_a_list_that_can_grow(tmp_path):
    from emseg.demo import DEMO_STEPS, DemoStep, run_demo

    names = [s.name for s in DEMO_STEPS]
    assert names[:3] == ["synthesize", "write", "preview"]
    extra = DemoStep("count", "count membrane voxels", lambda ctx: {
        "membrane_voxels": int(ctx.data["synthetic"].membranes.sum())
    })  # fmt: skip
    result = run_demo(tmp_path / "d", shape=(6, 64, 64), steps=[DEMO_STEPS[0], extra])
    assert result.steps["count"]["membrane_voxels"] > 0
    summary = json.loads(result.summary_path.read_text())
    assert summary["steps"]["count"] == result.steps["count"]
