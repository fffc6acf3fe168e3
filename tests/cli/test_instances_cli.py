"""`emseg instances`: every method end to end, refusing to overwrite, --resume, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage

from emseg.cli import main
from emseg.instance import (
    agglomerate,
    distance_watershed,
    link_sections,
    mutex_watershed,
    supervoxels,
    threshold_components,
)
from emseg.metrics import voi


def _read(path):
    return zarr.open_array(str(path / "0"), mode="r")[:]


def _same(a, b):
    a, b = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
    return np.array_equal(a == 0, b == 0) and voi(a, b, ignore_truth=()).total == 0.0


@pytest.fixture
def prob_path(tmp_path):
    rng = np.random.default_rng(3)
    p = ndimage.gaussian_filter(rng.random((10, 30, 28)), 1.5)
    p = ((p - p.min()) / (p.max() - p.min())).astype(np.float32)
    path = tmp_path / "prob.tif"
    tifffile.imwrite(path, p)
    return path, p


def test_components_with_min_size_in_nm3(tmp_path, prob_path, capsys):
    path, p = prob_path
    out = tmp_path / "objects.ome.zarr"
    argv = [
        "instances",
        str(path),
        str(out),
        "--method",
        "components",
        "--threshold",
        "0.6",
        "--min-size",
        "80",
        "--spacing",
        "2",
        "2",
        "2",
        "--block",
        "5",
        "10",
        "14",
        "--chunks",
        "5",
        "10",
        "14",
        "--no-progress",
    ]
    assert main(argv) == 0
    ref = threshold_components(p, threshold=0.6, spacing=2.0, min_size_nm3=80)
    got = _read(out)
    assert got.dtype == np.uint64
    assert _same(ref, got)
    assert f"{ref.max()} objects" in capsys.readouterr().out
    attrs = zarr.open_group(str(out), mode="r").attrs.asdict()
    assert "multiscales" in attrs.get("ome", attrs)
    # an existing output is refused without --overwrite; --resume of a finished job is a no-op
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert main([*argv, "--overwrite"]) == 0


def test_min_size_in_voxels_is_a_clear_error(tmp_path, prob_path, capsys):
    path, _ = prob_path
    argv = [
        "instances",
        str(path),
        str(tmp_path / "o.zarr"),
        "--spacing",
        "40",
        "4",
        "4",
        "--min-size",
        "50",
        "--no-progress",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "smaller than one voxel" in err
    assert "Traceback" not in err


def test_watershed(tmp_path, capsys):
    z, y, x = np.ogrid[:20, :20, :34]
    m = ((z - 10) ** 2 + (y - 10) ** 2 + (x - 11) ** 2 < 49) | (
        (z - 10) ** 2 + (y - 10) ** 2 + (x - 22) ** 2 < 49
    )
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, m.astype(np.uint8) * 255)
    out = tmp_path / "ws.zarr"
    assert (
        main(
            [
                "instances",
                str(path),
                str(out),
                "--method",
                "watershed",
                "--seed-distance",
                "4",
                "--halo",
                "20",
                "--block",
                "10",
                "10",
                "17",
                "--chunks",
                "10",
                "10",
                "17",
                "--no-progress",
                "--spacing",
                "1",
                "1",
                "1",
            ]
        )
        == 0
    )
    assert _same(distance_watershed(m, min_seed_distance_nm=4), _read(out))
    assert _read(out).max() == 2
    assert (
        main(
            [
                "instances",
                str(path),
                str(tmp_path / "w2.zarr"),
                "--method",
                "watershed",
                "--spacing",
                "1",
                "1",
                "1",
            ]
        )
        == 2
    )
    assert "--seed-distance" in capsys.readouterr().err


def test_agglomerate_and_fragments(tmp_path):
    rng = np.random.default_rng(0)
    bnd = (rng.random((6, 16, 24)) * 0.1).astype(np.float32)
    bnd[:, :, 11:13] = 0.9 + rng.random((6, 16, 2)).astype(np.float32) * 0.1
    path = tmp_path / "boundary.tif"
    tifffile.imwrite(path, bnd)
    out = tmp_path / "neurons.zarr"
    assert (
        main(
            [
                "instances",
                str(path),
                str(out),
                "--method",
                "agglomerate",
                "--threshold",
                "0.4",
                "--halo",
                "24",
                "--no-progress",
                "--spacing",
                "1",
                "1",
                "1",
            ]
        )
        == 0
    )
    ref = agglomerate(supervoxels(bnd), bnd, threshold=0.4)
    assert _same(ref, _read(out))
    frag_path = tmp_path / "frag.tif"
    tifffile.imwrite(frag_path, supervoxels(bnd).astype(np.uint32))
    out2 = tmp_path / "neurons2.zarr"
    assert (
        main(
            [
                "instances",
                str(path),
                str(out2),
                "--method",
                "agglomerate",
                "--threshold",
                "0.4",
                "--fragments",
                str(frag_path),
                "--halo",
                "4",
                "--no-progress",
                "--spacing",
                "1",
                "1",
                "1",
            ]
        )
        == 0
    )
    assert _same(ref, _read(out2))


def test_mws(tmp_path):
    truth = np.zeros((3, 12, 12), np.int64)
    truth[:, :, 6:] = 1
    offsets = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, -3)]
    aff = np.zeros((4, *truth.shape), np.float32)
    for c, off in enumerate(offsets):
        sh = np.roll(truth, shift=[-o for o in off], axis=(0, 1, 2))
        aff[c] = np.where(sh == truth, 0.9, 0.1)
    path = tmp_path / "aff.zarr"
    zarr.create_array(store=str(path), data=aff, chunks=(1, 3, 12, 12))
    out = tmp_path / "mws.zarr"
    assert (
        main(
            [
                "instances",
                str(path),
                str(out),
                "--method",
                "mws",
                "--offsets=-1,0,0;0,-1,0;0,0,-1;0,0,-3",
                "--halo",
                "12",
                "--no-progress",
                "--spacing",
                "1",
                "1",
                "1",
            ]
        )
        == 0
    )
    assert _same(mutex_watershed(aff, offsets), _read(out))


def test_link2d(tmp_path, rng):
    yy, xx = np.mgrid[:30, :30]
    sections = np.zeros((5, 30, 30), np.uint16)
    for z in range(5):
        sections[z][((yy - 10 - z) / 5) ** 2 + ((xx - 10) / 6) ** 2 < 1] = 7 + z
        sections[z][((yy - 22) / 4) ** 2 + ((xx - 22 + z) / 4) ** 2 < 1] = 3
    path = tmp_path / "sections.tif"
    tifffile.imwrite(path, sections)
    out = tmp_path / "linked.zarr"
    assert (
        main(
            [
                "instances",
                str(path),
                str(out),
                "--method",
                "link2d",
                "--min-iou",
                "0.4",
                "--block",
                "2",
                "15",
                "15",
                "--chunks",
                "2",
                "15",
                "15",
                "--no-progress",
                "--spacing",
                "1",
                "1",
                "1",
            ]
        )
        == 0
    )
    ref = link_sections(sections, min_iou=0.4)
    assert _same(ref, _read(out))
    assert ref.max() == 2


def test_help_lists_methods(capsys):
    with pytest.raises(SystemExit):
        main(["instances", "--help"])
    text = capsys.readouterr().out
    for m in ("components", "watershed", "agglomerate", "mws", "link2d", "--min-size"):
        assert m in text
