"""`emseg blockwise-filter` and `emseg label`: results, refusing to overwrite, --resume."""

from __future__ import annotations

import shutil
import socket

import cc3d
import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage

from emseg.cli import main


@pytest.fixture
def image_path(tmp_path):
    rng = np.random.default_rng(21)
    data = ndimage.gaussian_filter(rng.random((12, 40, 36)), 1.5)
    data = (data / data.max() * 255).astype(np.uint8)
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, data)
    return path, data


def _read(path):
    return zarr.open_array(str(path / "0"), mode="r")


def _interrupt(path):
    """Make a finished output look like a job killed before its end."""
    (path / ".emseg-journal" / "complete").unlink()
    shutil.rmtree(path / "0" / "c")
    arr = zarr.open_array(str(path / "0"), mode="r+")
    arr.attrs["emseg"] = {"complete": False, "job": "killed"}


def test_gaussian_in_nm(tmp_path, image_path, capsys):
    src, data = image_path
    out = tmp_path / "smooth.ome.zarr"
    args = ["blockwise-filter", str(src), str(out), "--op", "gaussian", "--sigma", "8"]
    args += ["--spacing", "8", "4", "4", "--block", "4", "16", "16", "--chunks", "4", "16", "16"]
    assert main([*args, "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    ref = ndimage.gaussian_filter(data.astype(np.float32), (1.0, 2.0, 2.0))
    result = _read(out)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result[:], ref, atol=1e-4)
    assert result.attrs["emseg"]["complete"] is True

    # an existing output is refused without --overwrite or --resume
    assert main([*args, "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    # --resume continues a killed job and gives the same result
    _interrupt(out)
    assert main([*args, "--no-progress", "--resume"]) == 0
    np.testing.assert_allclose(_read(out)[:], ref, atol=1e-4)
    # resuming with other parameters is refused
    _interrupt(out)
    other = [a if a != "8" or i != 6 else "12" for i, a in enumerate(args)]
    assert other != args
    assert main([*other, "--no-progress", "--resume"]) == 2
    assert "different parameters" in capsys.readouterr().err
    # --overwrite starts again
    assert main([*other, "--no-progress", "--overwrite"]) == 0
    ref12 = ndimage.gaussian_filter(data.astype(np.float32), (1.5, 3.0, 3.0))
    np.testing.assert_allclose(_read(out)[:], ref12, atol=1e-4)


def test_median_in_voxels(tmp_path, image_path):
    src, data = image_path
    out = tmp_path / "median.zarr"
    args = ["blockwise-filter", str(src), str(out), "--op", "median", "--size", "3"]
    args += ["--unit", "voxel", "--block", "6", "16", "16", "--chunks", "6", "16", "16"]
    args += ["--spacing", "30", "5", "5"]
    assert main([*args, "--workers", "1", "--no-progress"]) == 0
    result = _read(out)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result[:], ndimage.median_filter(data, size=3))


def test_filter_argument_errors(tmp_path, image_path, capsys):
    src, _ = image_path
    assert main(["blockwise-filter", str(src), str(tmp_path / "o.zarr"), "--spacing", "1"]) == 2
    assert "--sigma" in capsys.readouterr().err
    args = ["blockwise-filter", str(src), str(tmp_path / "o2.zarr"), "--sigma", "2"]
    args += ["--spacing", "1", "1", "1"]
    assert main([*args, "--block", "5", "5", "5", "--chunks", "4", "4", "4"]) == 2
    assert "not aligned" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main([*args, "--scheduler", f"tcp://127.0.0.1:{port}", "--no-progress"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


def test_label_threshold_connectivity_and_resume(tmp_path, image_path, capsys):
    src, data = image_path
    out = tmp_path / "labels.ome.zarr"
    args = ["label", str(src), str(out), "--threshold", "120", "--connectivity", "6"]
    args += ["--block", "4", "8", "8", "--chunks", "4", "8", "8", "--no-progress"]
    args += ["--spacing", "50", "4", "4"]
    assert main(args) == 0
    ref = cc3d.connected_components(data > 120, connectivity=6)
    result = _read(out)
    assert result.dtype == np.uint64
    labels = result[:]
    pairs = np.unique(np.stack([labels.ravel(), ref.ravel()]), axis=1)
    assert pairs.shape[1] == np.unique(labels).size == np.unique(ref).size
    assert f"{int(ref.max())} objects" in capsys.readouterr().out

    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    _interrupt(out)
    assert main([*args, "--resume"]) == 0
    np.testing.assert_array_equal(_read(out)[:], labels)
    assert main([*args, "--overwrite"]) == 0
    np.testing.assert_array_equal(_read(out)[:], labels)


def test_label_min_size_in_nm3(tmp_path, image_path, capsys):
    """--min-size 20 voxels' volume: cc3d + removal of components under 20 voxels, in memory."""
    src, data = image_path
    out = tmp_path / "big.ome.zarr"
    voxel = 50 * 4 * 4
    args = ["label", str(src), str(out), "--threshold", "215", "--min-size", str(20 * voxel)]
    args += ["--block", "4", "8", "8", "--chunks", "4", "8", "8", "--no-progress"]
    assert main([*args, "--spacing", "50", "4", "4"]) == 0
    ref = cc3d.connected_components(data > 215, connectivity=26)  # 24 objects, 11 small
    sizes = np.bincount(ref.ravel())
    small = np.flatnonzero(sizes < 20)
    assert small.size > 1  # the filter removes some ...
    assert (sizes[1:] >= 20).sum() > 1  # ... and keeps some
    ref[np.isin(ref, small)] = 0
    labels = _read(out)[:]
    pairs = np.unique(np.stack([labels.ravel(), ref.ravel()]), axis=1)
    assert pairs.shape[1] == np.unique(labels).size == np.unique(ref).size
    assert f"{np.unique(ref).size - 1} objects" in capsys.readouterr().out
    # a size in voxels (smaller than one voxel's volume) is refused with the fix in the message
    bad = ["label", str(src), str(tmp_path / "x.zarr"), "--min-size", "20"]
    assert main([*bad, "--spacing", "50", "4", "4", "--no-progress"]) == 2
    assert "not in voxels" in capsys.readouterr().err


def test_label_2d_and_help(tmp_path, capsys):
    img = np.zeros((30, 30), np.uint8)
    img[5:25, 10] = 1
    img[10, 2:28] = 1
    img[2, 2] = 1
    src = tmp_path / "mask.tif"
    tifffile.imwrite(src, img)
    out = tmp_path / "l.zarr"
    args = ["label", str(src), str(out), "--block", "8", "8", "--chunks", "8", "8"]
    assert main([*args, "--spacing", "4", "4", "--no-progress"]) == 0
    assert int(_read(out)[:].max()) == 2
    with pytest.raises(SystemExit):
        main(["label", "--help"])
    assert "--connectivity" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["blockwise-filter", "--help"])
    assert "--sigma" in capsys.readouterr().out
