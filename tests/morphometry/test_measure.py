"""Morphometry: analytic shapes, scikit-image agreement, blockwise = in memory, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr
from skimage.measure import regionprops

from emseg.errors import EmsegTypeError, EmsegValueError, OutputExistsError
from emseg.morphometry import histogram_percentiles, measure, read_table, write_table

SP = (40.0, 4.0, 4.0)


def _grid(shape, spacing):
    return np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )


def _ellipsoid(shape, spacing, centre, semi):
    z, y, x = _grid(shape, spacing)
    return (
        ((z - centre[0]) / semi[0]) ** 2
        + ((y - centre[1]) / semi[1]) ** 2
        + ((x - centre[2]) / semi[2]) ** 2
    ) <= 1


def test_ball_at_anisotropic_spacing():
    r = 320.0
    ball = _ellipsoid((22, 180, 180), SP, (430.0, 362.0, 357.0), (r, r, r))
    row = measure(ball.astype(np.uint32), spacing=SP).table.iloc[0]
    assert row.volume_nm3 == pytest.approx(4 / 3 * np.pi * r**3, rel=0.02)
    assert row.equivalent_diameter_nm == pytest.approx(2 * r, rel=0.01)
    assert row.surface_area_nm2 == pytest.approx(4 * np.pi * r**2, rel=0.03)
    assert row.sphericity == pytest.approx(1.0, abs=0.03)
    for k in (1, 2, 3):
        assert row[f"axis_{k}_nm"] == pytest.approx(2 * r, rel=0.03)
    assert row.feret_max_nm == pytest.approx(2 * r, rel=0.04)
    assert row.centroid_z_nm == pytest.approx(430.0, abs=2)
    assert row.centroid_x_nm == pytest.approx(357.0, abs=1)
    assert not row.touches_border


def test_ellipsoid_axes_and_ratios():
    semi = (400.0, 240.0, 120.0)  # z is the longest axis
    e = _ellipsoid((26, 140, 80), SP, (500.0, 280.0, 160.0), semi)
    row = measure(e.astype(np.uint16), spacing=SP).table.iloc[0]
    assert row.axis_1_nm == pytest.approx(800.0, rel=0.03)
    assert row.axis_2_nm == pytest.approx(480.0, rel=0.03)
    assert row.axis_3_nm == pytest.approx(240.0, rel=0.03)
    assert row.elongation == pytest.approx(800 / 480, rel=0.04)
    assert row.flatness == pytest.approx(2.0, rel=0.04)
    assert row.volume_nm3 == pytest.approx(4 / 3 * np.pi * np.prod(semi), rel=0.02)
    assert row.solidity > 0.9


def test_rod_length_and_elongation():
    # a cylinder of radius 60 nm, 600 nm long along x, at 20 x 4 x 4 nm
    sp = (20.0, 4.0, 4.0)
    z, y, x = _grid((12, 40, 180), sp)
    rod = ((z - 110) ** 2 + (y - 80) ** 2 <= 60.0**2) & (x >= 60) & (x < 660)
    row = measure(rod.astype(np.uint8), spacing=sp).table.iloc[0]
    # solid cylinder: var along the axis = L^2 / 12, so sqrt(20 var) = L sqrt(5/3)
    assert row.axis_1_nm == pytest.approx(600 * np.sqrt(5 / 3), rel=0.02)
    assert row.feret_max_nm == pytest.approx(np.hypot(600, 120), rel=0.04)
    assert row.elongation > 4
    assert row.volume_nm3 == pytest.approx(np.pi * 60**2 * 600, rel=0.05)


def _blobs(rng, shape=(10, 40, 48), n=12):
    lab = np.zeros(shape, np.uint32)
    for i in range(1, n + 1):
        c = [rng.integers(0, s) for s in shape]
        r = rng.integers(2, 7, size=3)
        sl = tuple(slice(max(0, cc - rr), cc + rr) for cc, rr in zip(c, r, strict=True))
        lab[sl] = i * 3
    return lab


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (30.0, 5.0, 4.0)])
def test_regionprops_agreement_3d(rng, spacing):
    lab = _blobs(rng)
    img = rng.integers(0, 256, lab.shape, dtype=np.uint8)
    t = measure(lab, image=img, spacing=spacing).table.set_index("label")
    props = regionprops(lab, intensity_image=img, spacing=spacing)
    assert sorted(t.index) == [p.label for p in props]
    for p in props:
        row = t.loc[p.label]
        assert row.volume_nm3 == pytest.approx(p.area)
        assert [row.centroid_z_nm, row.centroid_y_nm, row.centroid_x_nm] == pytest.approx(
            list(p.centroid)
        )
        assert (
            row.bbox_z0_vx,
            row.bbox_y0_vx,
            row.bbox_x0_vx,
            row.bbox_z1_vx,
            row.bbox_y1_vx,
            row.bbox_x1_vx,
        ) == p.bbox
        assert row.intensity_mean == pytest.approx(p.intensity_mean)
        if min(np.subtract(p.bbox[3:], p.bbox[:3])) > 1:  # skimage warns on flat hulls
            assert row.solidity == pytest.approx(p.solidity)
        if p.area > 8 * np.prod(spacing):
            assert row.axis_1_nm == pytest.approx(p.axis_major_length, rel=1e-6)
            assert row.axis_3_nm == pytest.approx(p.axis_minor_length, rel=1e-6, abs=1e-6)


def test_regionprops_agreement_2d(rng):
    lab = _blobs(rng, shape=(1, 60, 70), n=8)[0]
    sp = (5.0, 3.0)
    t = measure(lab, spacing=sp).table.set_index("label")
    assert "area_nm2" in t
    assert "perimeter_nm" in t
    assert "flatness" not in t
    for p in regionprops(lab, spacing=sp):
        row = t.loc[p.label]
        assert row.area_nm2 == pytest.approx(p.area)
        assert row.axis_1_nm == pytest.approx(p.axis_major_length)
        assert row.axis_2_nm == pytest.approx(p.axis_minor_length)
        assert row.solidity == pytest.approx(p.solidity)
        assert [row.centroid_y_nm, row.centroid_x_nm] == pytest.approx(list(p.centroid))


def test_disk_perimeter_2d():
    y, x = np.mgrid[0:120, 0:120] * 2.0
    disk = (y - 120) ** 2 + (x - 118) ** 2 <= 90.0**2
    row = measure(disk.astype(np.uint8), spacing=2.0).table.iloc[0]
    assert row.perimeter_nm == pytest.approx(2 * np.pi * 90, rel=0.02)
    assert row.equivalent_diameter_nm == pytest.approx(180, rel=0.01)


def test_blockwise_equals_in_memory(rng, tmp_path):
    lab = _blobs(rng, shape=(12, 36, 40), n=15)
    img = rng.integers(0, 256, lab.shape, dtype=np.uint8)
    cls = rng.integers(0, 3, lab.shape, dtype=np.uint8)
    ref = measure(lab, image=img, classes=cls, class_names=("bg", "a", "b"), spacing=SP).table
    z = zarr.open_array(
        tmp_path / "lab.zarr", mode="w", shape=lab.shape, chunks=(5, 11, 13), dtype=lab.dtype
    )
    z[...] = lab
    for bs in [(5, 11, 13), (12, 36, 40), (3, 7, 40)]:
        got = measure(
            z,
            image=img,
            classes=cls,
            class_names=("bg", "a", "b"),
            spacing=SP,
            block_shape=bs,
            n_workers=2,
        ).table
        assert list(got.columns) == list(ref.columns)
        for col in ref.columns:
            if not pd.api.types.is_numeric_dtype(ref[col]):
                assert list(got[col]) == list(ref[col]), col
            else:
                np.testing.assert_allclose(
                    got[col].to_numpy(float),
                    ref[col].to_numpy(float),
                    rtol=1e-9,
                    atol=1e-9,
                    err_msg=col,
                )


def test_percentiles_and_classes_exact(rng):
    lab = np.zeros((4, 20, 20), np.uint32)
    lab[:, :10] = 1
    lab[1:3, 12:18, 3:9] = 2
    img = rng.integers(0, 256, lab.shape, dtype=np.uint8)
    cls = np.zeros(lab.shape, np.uint8)
    cls[:, :6] = 2  # 6 of 10 rows of label 1 are class 2
    cls[:, 6:10] = 1
    t = measure(
        lab, image=img, classes=cls, class_names=("bg", "cyto", "mito"), geometry=False
    ).table.set_index("label")
    assert t.loc[1, "class"] == "mito"
    assert t.loc[2, "class"] == "bg"
    for lab_id in (1, 2):
        vals = img[lab == lab_id]
        for q in (5, 25, 50, 75, 95):
            assert t.loc[lab_id, f"intensity_p{q:02d}"] == np.percentile(vals, q, method="lower")
        assert t.loc[lab_id, "intensity_std"] == pytest.approx(vals.std())
        assert t.loc[lab_id, "intensity_max"] == vals.max()
    assert bool(t.loc[1, "touches_border"])
    assert not bool(t.loc[2, "touches_border"])


def test_float_image_percentiles_within_one_bin(rng):
    lab = np.ones((3, 10, 10), np.uint8)
    img = rng.normal(size=lab.shape).astype(np.float32)
    row = measure(lab, image=img, geometry=False).table.iloc[0]
    width = (img.max() - img.min()) / 1024
    assert abs(row.intensity_p50 - np.percentile(img, 50, method="lower")) <= width * 1.001
    hist = np.array([[0, 3, 0, 1]])
    assert histogram_percentiles(hist, np.arange(5.0), 50)[0] == 1.0


def test_large_objects_measured_on_strided_view():
    r = 300.0
    ball = _ellipsoid((20, 170, 170), SP, (400.0, 340.0, 340.0), (r, r, r)).astype(np.uint8)
    row = measure(ball, spacing=SP, max_object_voxels=20_000).table.iloc[0]
    assert row.geometry_step > 1
    assert row.surface_area_nm2 == pytest.approx(4 * np.pi * r**2, rel=0.1)
    assert row.volume_nm3 == pytest.approx(4 / 3 * np.pi * r**3, rel=0.02)  # from the reduction


def test_points_are_on_the_surface():
    r = 200.0
    ball = _ellipsoid((16, 110, 110), SP, (300.0, 220.0, 220.0), (r, r, r)).astype(np.uint8)
    m = measure(ball, spacing=SP, n_points=100)
    pts = m.points[1]
    assert pts.shape == (100, 3)
    assert pts.dtype == np.float32
    dist = np.linalg.norm(pts - np.array([300.0, 220.0, 220.0]), axis=1)
    assert np.all(np.abs(dist - r) < 25)


def test_table_round_trip(tmp_path, rng):
    lab = _blobs(rng)
    t = measure(lab, spacing=SP).table
    for name in ("t.parquet", "t.csv"):
        path = write_table(t, tmp_path / name)
        back = read_table(path)
        assert back.attrs["emseg"]["spacing_nm"] == list(SP)
        np.testing.assert_allclose(back["volume_nm3"], t["volume_nm3"])
        with pytest.raises(OutputExistsError, match="overwrite"):
            write_table(t, path)
    with pytest.raises(EmsegValueError, match=r"parquet or \.csv"):
        write_table(t, tmp_path / "t.xlsx")


def test_bad_inputs():
    lab = np.zeros((4, 5, 6), np.uint32)
    with pytest.raises(EmsegValueError, match="same shape"):
        measure(lab, image=np.zeros((4, 5, 7)))
    with pytest.raises(EmsegTypeError, match="integer label"):
        measure(lab.astype(np.float32))
    with pytest.raises(EmsegValueError, match="3 entries"):
        measure(lab, spacing=(4.0, 4.0))
    assert len(measure(lab).table) == 0
