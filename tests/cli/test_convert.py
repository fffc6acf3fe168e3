"""``emseg convert``: through ``emseg.cli.main`` and once through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from emseg.cli import main
from emseg.io import open_image

EMSEG = Path(sys.executable).with_name("emseg")


@pytest.fixture
def tif(tmp_path, rng):
    """A 3D OME-TIFF with its spacing, written by tifffile (not by emseg)."""
    data = rng.integers(0, 255, (20, 96, 80), dtype=np.uint8)
    path = tmp_path / "in.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeZ": 0.04,
            "PhysicalSizeZUnit": "µm",
            "PhysicalSizeY": 4.0,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeX": 4.0,
            "PhysicalSizeXUnit": "nm",
        },
    )
    return path, data


def test_convert_to_ome_zarr_with_pyramid_and_provenance(tmp_path, tif, capsys):
    path, data = tif
    out = tmp_path / "out.ome.zarr"
    assert main(["convert", str(path), str(out), "--chunks", "8", "32", "32"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(
        f"wrote {out}: shape (20, 96, 80) uint8, spacing 40 x 4 x 4 nm, 3 levels"
    )
    assert "\n" not in line
    img = open_image(out)
    np.testing.assert_array_equal(img[...], data)
    assert img.spacing == (40.0, 4.0, 4.0)
    assert img.chunks == (8, 32, 32)
    assert open_image(out, level=1).shape == (20, 48, 40)  # 40 x 4 x 4 nm: xy only
    prov = img.attrs["emseg"]
    assert prov["producer"] == "emseg convert"
    assert prov["inputs"] == [str(path)]
    assert prov["parameters"]["compression"] == "zstd"
    assert prov["parameters"]["spacing"] == [40.0, 4.0, 4.0]


def test_convert_options(tmp_path, tif, capsys):
    path, data = tif
    labels = (data // 64).astype(np.uint8)
    lab_in = tmp_path / "labels.tif"
    tifffile.imwrite(lab_in, labels)
    out = tmp_path / "lab.zarr"
    argv = ["convert", str(lab_in), str(out), "--spacing", "30", "6", "6", "--labels", "--chunks"]
    argv += ["8", "32", "32"]
    assert main([*argv, "--zarr-format", "2", "--compression", "gzip"]) == 0
    img = open_image(out)
    assert img.spacing == (30.0, 6.0, 6.0)
    assert img.attrs["emseg"]["labels"] is True
    assert (out / ".zattrs").exists()
    np.testing.assert_array_equal(img[...], labels)
    lvl1 = open_image(out, level=1)[...]
    assert set(np.unique(lvl1)) <= set(np.unique(labels))

    # --no-pyramid, --overwrite, TIFF output
    assert (
        main(["convert", str(path), str(out), "--no-pyramid", "--overwrite", "--chunks", "8"]) == 0
    )
    assert open_image(out).levels == 1
    tif_out = tmp_path / "copy.tif"
    assert main(["convert", str(out), str(tif_out), "--compression", "none"]) == 0
    with tifffile.TiffFile(tif_out) as tf:
        np.testing.assert_array_equal(tf.asarray(), data)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["convert", "{tmp}/missing.tif", "{tmp}/o.zarr"], "no such file or folder"),
        (
            ["convert", "{in}", "{tmp}/exists.zarr"],
            "exists; pass overwrite=True (CLI: --overwrite)",
        ),
        (
            ["convert", "{in}", "{tmp}/o.zarr", "--spacing", "1", "2"],
            "`spacing` must have 3 entries",
        ),
        (["convert", "{in}", "{tmp}/o.png"], "cannot write"),
        (["convert", "{in}", "{tmp}/o.tif", "--compression", "blosc"], "Zarr only"),
    ],
)
def test_errors_are_one_line(tmp_path, tif, capsys, argv, message):
    (tmp_path / "exists.zarr").mkdir()
    argv = [a.format(tmp=tmp_path, **{"in": tif[0]}) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emseg convert: error: ")
    assert message in err
    assert "\n" not in err
    assert not (tmp_path / "o.zarr").exists()


def test_console_script_exit_codes_and_stderr(tmp_path, tif):
    """The installed ``emseg`` command: one stderr line, no traceback, exit status 2."""
    (tmp_path / "exists.zarr").mkdir()
    cases = [
        ([str(tmp_path / "missing.tif"), str(tmp_path / "o.zarr")], "no such file"),
        ([str(tif[0]), str(tmp_path / "exists.zarr")], "--overwrite"),
        ([str(tif[0]), str(tmp_path / "o.zarr"), "--spacing", "0", "4", "4"], "positive"),
    ]
    for args, message in cases:
        proc = subprocess.run(
            [str(EMSEG), "convert", *args], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert message in lines[0]
    ok = subprocess.run(
        [str(EMSEG), "-q", "convert", str(tif[0]), str(tmp_path / "ok.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("wrote ")
    meta = json.loads((tmp_path / "ok.zarr" / "zarr.json").read_text())
    assert meta["attributes"]["ome"]["version"] == "0.5"
