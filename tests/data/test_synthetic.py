"""Synthetic EM: determinism, exact ground truth, blockwise = whole, lazy slides, bad input."""

from __future__ import annotations

import tracemalloc

import cc3d
import numpy as np
import pytest
from skimage.measure import regionprops

from emseg.data import CLASS_NAMES, synthetic_em, synthetic_slide

SMALL = (6, 72, 72)
QUIET = {"photons": 0.0, "read_noise": 0.0}


@pytest.fixture(scope="module")
def em():
    return synthetic_em(SMALL, seed=3, cell_diameter=300.0, mitochondria_fraction=1.0)


@pytest.fixture(scope="module")
def iso():
    """Near-isotropic volume, big enough to hold whole mitochondria."""
    return synthetic_em(
        (48, 80, 80), spacing=8.0, seed=5, cell_diameter=400.0, mitochondria_fraction=1.0
    )


def test_shapes_dtypes_and_metadata(em):
    dtypes = {
        "image": np.uint8,
        "cells": np.uint32,
        "membranes": np.bool_,
        "mitochondria": np.uint32,
        "vesicles": np.bool_,
        "nucleus": np.bool_,
        "classes": np.uint8,
    }
    for name, dtype in dtypes.items():
        arr = getattr(em, name)
        assert arr.shape == SMALL, name
        assert arr.dtype == dtype, name
    assert (
        em.class_names
        == CLASS_NAMES
        == (
            "cytoplasm",
            "membrane",
            "mitochondrion",
            "vesicle",
            "nucleus",
        )
    )
    assert em.spacing == (40.0, 4.0, 4.0)
    assert em.seed == 3
    assert em.params["cell_diameter"] == 300.0
    assert em.offset == (0, 0, 0)
    assert set(em.labels) == set(dtypes) - {"image"}
    assert (em.cells > 0).all()  # dense: every voxel belongs to a cell


def test_same_seed_identical_other_seed_differs(em):
    again = synthetic_em(SMALL, seed=3, cell_diameter=300.0, mitochondria_fraction=1.0)
    for name in ("image", *em.labels):
        np.testing.assert_array_equal(getattr(em, name), getattr(again, name))
    other = synthetic_em(SMALL, seed=4, cell_diameter=300.0, mitochondria_fraction=1.0)
    assert (other.image != em.image).mean() > 0.5
    assert (other.cells != em.cells).mean() > 0.5


def test_classes_follow_masks_with_priority(em):
    c = em.classes
    np.testing.assert_array_equal(c == 1, em.membranes)
    np.testing.assert_array_equal(c == 2, (em.mitochondria > 0) & ~em.membranes)
    np.testing.assert_array_equal(c == 3, em.vesicles & ~em.membranes & (em.mitochondria == 0))
    np.testing.assert_array_equal(
        c == 4, em.nucleus & ~em.membranes & (em.mitochondria == 0) & ~em.vesicles
    )
    assert set(np.unique(c)) <= {0, 1, 2, 3, 4}


@pytest.mark.parametrize("fixture", ["em", "iso"])
def test_every_cell_boundary_face_touches_the_membrane_mask(fixture, request):
    vol = request.getfixturevalue(fixture)
    cells, mem = vol.cells, vol.membranes
    n_faces = 0
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        change = cells[tuple(lo)] != cells[tuple(hi)]
        covered = mem[tuple(lo)] | mem[tuple(hi)]
        n_faces += int(change.sum())
        assert covered[change].all(), f"axis {axis}: {(~covered[change]).sum()} faces uncovered"
    assert n_faces > 100
    # and the mask is near boundaries only: membrane voxels have a neighbour in another cell
    # within the mask's reach (a few voxels in-plane)
    from scipy import ndimage

    boundary = np.zeros_like(mem)
    for axis in (1, 2):
        d = np.diff(cells.astype(np.int64), axis=axis) != 0
        sl = [slice(None)] * 3
        sl[axis] = slice(None, -1)
        boundary[tuple(sl)] |= d
        sl[axis] = slice(1, None)
        boundary[tuple(sl)] |= d
    d = np.diff(cells.astype(np.int64), axis=0) != 0
    boundary[:-1] |= d
    boundary[1:] |= d
    near = ndimage.binary_dilation(boundary, np.ones((3, 1, 1), bool), iterations=1)
    near = ndimage.binary_dilation(near, np.ones((1, 3, 3), bool), iterations=12)
    assert near[mem].mean() > 0.99


@pytest.mark.parametrize("fixture", ["em", "iso"])
def test_membranes_and_mitochondria_darker_than_cytoplasm(fixture, request):
    vol = request.getfixturevalue(fixture)
    img = vol.image.astype(float)
    cyto = img[vol.classes == 0].mean()
    assert img[vol.membranes].mean() < cyto - 20
    assert 0.05 < vol.membranes.mean() < 0.5
    if fixture == "iso":
        assert img[vol.mitochondria > 0].mean() < cyto - 20


def test_mitochondria_inside_one_cell_connected_and_elongated(iso):
    ids = np.unique(iso.mitochondria)
    ids = ids[ids > 0]
    assert len(ids) >= 2
    elongated = 0
    for m in ids:
        mask = iso.mitochondria == m
        assert len(np.unique(iso.cells[mask])) == 1, "a mitochondrion spans two cells"
        assert not (mask & iso.membranes).any()
        assert cc3d.connected_components(mask.view(np.uint8), connectivity=26).max() == 1
        zz, yy, xx = np.nonzero(mask)
        touches = (
            zz.min() == 0
            or yy.min() == 0
            or xx.min() == 0
            or zz.max() == mask.shape[0] - 1
            or yy.max() == mask.shape[1] - 1
            or xx.max() == mask.shape[2] - 1
        )
        if not touches and mask.sum() > 100:
            (prop,) = regionprops(mask.astype(np.uint8), spacing=iso.spacing)
            assert prop.axis_major_length / prop.axis_minor_length > 1.5
            elongated += 1
    assert elongated >= 1


def test_anisotropy_mitochondria_span_fewer_sections():
    vol = synthetic_em(
        (16, 128, 128), spacing=(40.0, 4.0, 4.0), seed=2, cell_diameter=400.0,
        mitochondria_fraction=1.0,
    )  # fmt: skip
    ids = [m for m in np.unique(vol.mitochondria) if m]
    assert ids
    for m in ids:
        zz, yy, xx = np.nonzero(vol.mitochondria == m)
        nz = zz.max() - zz.min() + 1
        nyx = max(yy.max() - yy.min(), xx.max() - xx.min()) + 1
        # physical extents are comparable, so slices ~ in-plane voxels * 4 / 40
        assert nz <= nyx * 4 / 40 + 3
        assert nz < nyx


def test_cell_count_follows_density():
    def count(d):
        vol = synthetic_em((8, 128, 128), seed=7, cell_diameter=d, nucleus=False, **QUIET)
        return len(np.unique(vol.cells)), vol

    n_small, vol = count(250.0)
    n_large, _ = count(500.0)
    extent = np.asarray(vol.cells.shape) * np.asarray(vol.spacing)
    expected = float(np.prod(extent)) / (np.pi / 6 * 250.0**3)
    assert 0.5 * expected <= n_small <= 6 * expected
    assert n_small > 2 * n_large


def test_organelles_present_where_asked():
    vol = synthetic_em(
        (16, 128, 128), seed=11, cell_diameter=350.0, vesicle_fraction=1.0,
        mitochondria_fraction=1.0,
    )  # fmt: skip
    assert vol.vesicles.any()
    assert vol.nucleus.any()
    assert (vol.mitochondria > 0).any()
    # vesicles are ~40 nm: in-plane profiles at most ~12 voxels across at 4 nm
    lab = cc3d.connected_components(vol.vesicles[vol.vesicles.shape[0] // 2])
    if lab.max():
        sizes = np.bincount(lab.ravel())[1:]
        assert sizes.max() <= np.pi * 6.0**2
    none = synthetic_em((6, 64, 64), seed=11, vesicle_fraction=0.0, mitochondria_fraction=0.0,
                        nucleus=False)  # fmt: skip
    assert not none.vesicles.any()
    assert not none.nucleus.any()
    assert not none.mitochondria.any()


def test_section_drift_present_only_when_enabled():
    kw = {"seed": 1, "cell_diameter": 300.0, **QUIET}
    flat = synthetic_em((12, 48, 48), drift=0.0, **kw)
    drifting = synthetic_em((12, 48, 48), drift=0.15, **kw)
    np.testing.assert_array_equal(flat.cells, drifting.cells)  # geometry unchanged
    delta = drifting.image.astype(float) - flat.image.astype(float)
    per_section = delta.mean(axis=(1, 2))
    assert per_section.std() > 3.0
    # within a section the change is an affine map of the intensities, not noise
    again = synthetic_em((12, 48, 48), drift=0.0, **kw)
    np.testing.assert_array_equal(flat.image, again.image)


@pytest.mark.parametrize(
    "region",
    [
        (slice(0, 6), slice(0, 72), slice(0, 72)),
        (slice(1, 5), slice(10, 47), slice(30, 72)),
        (slice(5, 6), slice(0, 9), slice(64, 72)),
    ],
)
def test_box_rendered_alone_equals_same_box_of_whole(em, region):
    part = synthetic_em(
        SMALL, seed=3, cell_diameter=300.0, mitochondria_fraction=1.0, region=region
    )
    assert part.offset == tuple(s.start for s in region)
    for name in em.labels:
        np.testing.assert_array_equal(getattr(part, name), getattr(em, name)[region], name)
    diff = np.abs(part.image.astype(int) - em.image[region].astype(int))
    assert diff.max() <= 1


def test_slide_blocks_equal_whole():
    kw = {"seed": 4, "cell_diameter": 300.0}
    blocked = synthetic_slide((300, 260), chunks=(128, 100), **kw)
    whole = synthetic_slide((300, 260), chunks=(300, 260), **kw)
    assert blocked.image.chunks == ((128, 128, 44), (100, 100, 60))
    assert blocked.spacing == (4.0, 4.0)
    for name in ("cells", "membranes", "mitochondria", "vesicles", "nucleus", "classes"):
        a = getattr(blocked, name).compute()
        b = getattr(whole, name).compute()
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b, name)
    img_a = blocked.image.compute().astype(int)
    img_b = whole.image.compute().astype(int)
    assert np.abs(img_a - img_b).max() <= 1
    cells = blocked.cells.compute()
    change = cells[:, 1:] != cells[:, :-1]
    mem = blocked.membranes.compute()
    assert (mem[:, 1:] | mem[:, :-1])[change].all()


def test_slide_block_memory_is_bounded_by_the_block():
    slide = synthetic_slide((8192, 8192), chunks=(1024, 1024), seed=0)
    assert slide.image.shape == (8192, 8192)
    assert slide.image.numblocks == (8, 8)
    tracemalloc.start()
    try:
        block = slide.image.blocks[3, 5].compute(scheduler="synchronous")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert block.shape == (1024, 1024)
    assert block.dtype == np.uint8
    whole_outputs = 8192 * 8192 * (1 + 4 + 4 + 1 + 1 + 1 + 1)
    assert peak < 150e6 < whole_outputs / 5
    assert 100 < block.mean() < 220


def test_slide_written_with_write_image(tmp_path):
    from emseg.io import open_image, write_image

    slide = synthetic_slide((256, 192), chunks=(128, 96), seed=2, cell_diameter=300.0)
    write_image(slide.image, tmp_path / "img.ome.zarr", spacing=slide.spacing, pyramid=False)
    write_image(slide.cells, tmp_path / "cells.ome.zarr", spacing=slide.spacing, labels=True,
                pyramid=False)  # fmt: skip
    img = open_image(tmp_path / "img.ome.zarr")
    cells = open_image(tmp_path / "cells.ome.zarr")
    assert img.spacing == (4.0, 4.0)
    np.testing.assert_array_equal(img[:], slide.image.compute())
    np.testing.assert_array_equal(cells[:], slide.cells.compute())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shape": (64, 64)}, ValueError, "3 entries"),
        ({"shape": (4, 8, 8, 8)}, ValueError, "3 entries"),
        ({"shape": (4, 0, 8)}, ValueError, "positive"),
        ({"shape": 5}, TypeError, "sequence"),
        ({"spacing": (40.0, 0.0, 4.0)}, ValueError, "spacing"),
        ({"spacing": (4.0, 4.0)}, ValueError, "spacing"),
        ({"seed": -1}, ValueError, "seed"),
        ({"neurite_fraction": 1.5}, ValueError, "neurite_fraction"),
        ({"warp": 0.95}, ValueError, "warp"),
        ({"membrane_thickness": 0}, ValueError, "membrane_thickness"),
        ({"cell_diameter": 10.0}, ValueError, "cell_diameter"),
        ({"psf_sigma": (1.0, 2.0)}, ValueError, "psf_sigma"),
        ({"photons": -1.0}, ValueError, "photons"),
        ({"drift": "a lot"}, TypeError, "drift"),
        ({"region": (slice(0, 2),)}, ValueError, "region"),
        ({"region": (slice(0, 2), slice(5, 5), slice(0, 4))}, ValueError, "empty"),
    ],
)
def test_bad_input(kwargs, error, match):
    from emseg.errors import EmsegError

    kw = {"shape": (4, 32, 32), **kwargs}
    shape = kw.pop("shape")
    with pytest.raises(error, match=match) as info:
        synthetic_em(shape, **kw)
    assert isinstance(info.value, EmsegError)


def test_slide_bad_input():
    with pytest.raises(ValueError, match="synthetic_em for 3D"):
        synthetic_slide((4, 64, 64))
    with pytest.raises(ValueError, match="chunks"):
        synthetic_slide((64, 64), chunks=(0, 8))
