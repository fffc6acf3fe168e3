"""Blockwise connected components and relabelling equal the in-memory result."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emseg.blockwise import label, merge_pairs, relabel
from emseg.errors import EmsegTypeError, EmsegValueError


def spiral(n: int) -> np.ndarray:
    """A 2D square spiral with one-voxel-wide arms: one object crossing every block."""
    img = np.zeros((n, n), np.uint8)
    y, x = 0, 0
    img[y, x] = 1
    steps = [n - 1, n - 1, n - 1]
    length = n - 3
    while length > 0:
        steps += [length, length]
        length -= 2
    directions = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    for i, k in enumerate(steps):
        dy, dx = directions[i % 4]
        for _ in range(k):
            y, x = y + dy, x + dx
            img[y, x] = 1
    return img


def shells(shape) -> np.ndarray:
    """Concentric spherical shells: separate objects nested inside each other."""
    grid = np.indices(shape).astype(np.float64)
    centre = [(s - 1) / 2 for s in shape]
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    return ((r.astype(int) % 3) == 0).astype(np.uint8)


def diagonal_chain(shape) -> np.ndarray:
    """Voxels touching only through corners: one object with 26-, many with 6-connectivity."""
    img = np.zeros(shape, np.uint8)
    n = min(shape)
    for i in range(n):
        img[i, i, i] = 1
        img[i, (i + 3) % shape[1], n - 1 - i] = 1
    return img


def comb(shape) -> np.ndarray:
    """A component touching every block (a full plane with teeth), plus isolated dots."""
    img = np.zeros(shape, np.uint8)
    img[:, 0, :] = 1
    img[::2, :, ::3] = 1
    img[1::4, 5::3, 1::3] = 1
    return img


def reference(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """cc3d in memory on a uint8 mask (cc3d 4.1's bool / binary_image path has bugs)."""
    return cc3d.connected_components(np.asarray(mask).astype(np.uint8), connectivity=connectivity)


VOLUMES = {
    "shells": shells((17, 19, 16)),
    "diagonal": diagonal_chain((14, 15, 16)),
    "comb": comb((13, 16, 17)),
    "random": (np.random.default_rng(3).random((15, 16, 17)) > 0.65).astype(np.uint8),
}


@pytest.mark.parametrize("name", sorted(VOLUMES))
@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("block", [(6, 5, 8), (5, 7, 16)])
def test_label_3d_equals_cc3d(name, connectivity, block, assert_same_labels):
    img = VOLUMES[name]
    out = label(img, connectivity=connectivity, block_shape=block, chunks=block, progress=False)
    ref = cc3d.connected_components(img, connectivity=connectivity)
    assert out.dtype == np.uint64
    assert_same_labels(out[:], ref)
    assert out.attrs["emseg"]["n_labels"] == int(ref.max())


def test_label_18_connectivity(assert_same_labels):
    img = VOLUMES["random"]
    out = label(img, connectivity=18, block_shape=(4, 5, 6), chunks=(4, 5, 6), progress=False)
    assert_same_labels(out[:], cc3d.connected_components(img, connectivity=18))


def test_diagonal_chain_is_one_object_only_with_26():
    img = diagonal_chain((14, 15, 16))
    six = label(img, connectivity=6, block_shape=5, chunks=5, progress=False)
    full = label(img, connectivity=26, block_shape=5, chunks=5, progress=False)
    assert six.attrs["emseg"]["n_labels"] == int(img.sum())
    assert full.attrs["emseg"]["n_labels"] == int(cc3d.connected_components(img).max())
    assert full.attrs["emseg"]["n_labels"] < six.attrs["emseg"]["n_labels"]


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("block", [(4, 5), (7, 10), (64, 64)])
def test_label_2d_spiral_and_random(connectivity, block, assert_same_labels):
    img = spiral(31)
    assert cc3d.connected_components(img, connectivity=4).max() == 1
    out = label(img, connectivity=connectivity, block_shape=block, chunks=block, progress=False)
    ref = cc3d.connected_components(img, connectivity=connectivity)
    assert_same_labels(out[:], ref)
    rnd = (np.random.default_rng(1).random((29, 33)) > 0.5).astype(np.uint8)
    out = label(rnd, connectivity=connectivity, block_shape=block, chunks=block, progress=False)
    assert_same_labels(out[:], cc3d.connected_components(rnd, connectivity=connectivity))


@settings(max_examples=12)
@given(
    block=st.tuples(st.integers(1, 9), st.integers(2, 9), st.integers(3, 9)),
    connectivity=st.sampled_from([6, 18, 26]),
    seed=st.integers(0, 2**16),
)
def test_label_any_block_shape(block, connectivity, seed, assert_same_labels):
    img = np.random.default_rng(seed).random((8, 9, 10)) > 0.6
    out = label(img, connectivity=connectivity, block_shape=block, chunks=block, progress=False)
    assert_same_labels(out[:], reference(img, connectivity))


def test_threshold_and_empty_volume(assert_same_labels):
    img = (np.random.default_rng(5).random((12, 13, 14)) * 100).astype(np.float32)
    out = label(img, threshold=60.0, block_shape=5, chunks=5, n_workers=1, progress=False)
    assert_same_labels(out[:], reference(img > 60, 26))
    empty = label(np.zeros((6, 6, 6), np.uint8), block_shape=3, chunks=3, progress=False)
    assert not empty[:].any()
    assert empty.attrs["emseg"]["n_labels"] == 0


def test_label_errors():
    img = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(EmsegValueError, match=r"connectivity.*\[6, 18, 26\]"):
        label(img, connectivity=8)
    with pytest.raises(EmsegValueError, match=r"\[4, 8\]"):
        label(img[0], connectivity=6)
    with pytest.raises(EmsegValueError, match="threshold"):
        label(img, threshold=float("nan"))


def test_merge_pairs_hand_case():
    pairs = np.array([[5, 9], [9, 12], [20, 7], [30, 31]], dtype=np.uint64)
    nodes, roots, removed = merge_pairs(pairs)
    assert nodes.tolist() == [5, 7, 9, 12, 20, 30, 31]
    assert roots.tolist() == [5, 7, 5, 5, 7, 30, 30]
    assert removed.tolist() == [9, 12, 20, 31]
    empty = merge_pairs(np.zeros((0, 2), np.uint64))
    assert all(a.size == 0 for a in empty)


def test_relabel_equals_in_memory_mapping():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 50, size=(10, 11, 12)).astype(np.uint32)
    mapping = {i: (i * 7) % 13 for i in range(1, 50, 2)}
    out = relabel(labels, mapping, block_shape=4, chunks=4, progress=False)
    expected = labels.astype(np.uint64)
    for k, v in mapping.items():
        expected[labels == k] = v
    np.testing.assert_array_equal(out[:], expected)
    out2 = relabel(
        labels,
        (list(mapping), list(mapping.values())),
        dtype=np.uint32,
        block_shape=5,
        chunks=5,
        progress=False,
    )
    np.testing.assert_array_equal(out2[:], expected.astype(np.uint32))
    with pytest.raises(EmsegTypeError, match="integer label"):
        relabel(labels.astype(np.float32), mapping)
    with pytest.raises(EmsegValueError, match="unique"):
        relabel(labels, ([1, 1], [2, 3]))


@pytest.mark.parametrize(
    ("shape", "block", "chunks", "connectivity"),
    [
        ((19, 21, 22), (8, 8, 12), (4, 8, 6), 26),  # blocks of several chunks, edge chunks
        ((19, 21, 22), (5, 7, 9), (5, 7, 9), 6),  # blocks that do not divide the volume
        ((45, 37), (16, 8), (8, 8), 8),
    ],
)
def test_label_on_disk_equals_cc3d_and_in_memory(
    tmp_path, shape, block, chunks, connectivity, assert_same_labels
):
    """A local zarr output (chunks written directly, not through zarr) holds the same labels."""
    img = np.random.default_rng(7).random(shape) > 0.55
    kw = {"connectivity": connectivity, "block_shape": block, "chunks": chunks, "progress": False}
    disk = label(img, out=tmp_path / "labels.zarr", **kw)
    memory = label(img, **kw)
    assert_same_labels(disk[:], reference(img, connectivity))
    np.testing.assert_array_equal(disk[:], memory[:])  # same ids, not only the same partition
    # reopened from disk by zarr alone
    import zarr

    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "labels.zarr" / "0"))[:], disk[:])


@pytest.mark.parametrize("connectivity", [8, 26])
def test_bool_input_where_cc3d_binary_path_fails(connectivity, assert_same_labels):
    """Bool masks are labelled as uint8 (cc3d 4.1's bool path is wrong on these)."""
    rng = np.random.default_rng(1)
    shape = (29, 33) if connectivity == 8 else (9, 29, 33)
    img = rng.random(shape) > 0.5
    block = 4 if connectivity == 8 else (3, 8, 8)
    out = label(img, connectivity=connectivity, block_shape=block, chunks=block, progress=False)
    assert_same_labels(out[:], reference(img, connectivity))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("shape", [(7, 5, 6), (9, 11), (1, 4, 4)])
def test_scratch_block_round_trip(tmp_path, monkeypatch, dtype, shape):
    """One scratch file per block: boundary planes (raw, by offset) then the labels (LZ4)."""
    from emseg.blockwise import _labels

    rng = np.random.default_rng(0)
    labels = rng.integers(0, min(2**15, np.iinfo(dtype).max), size=shape).astype(dtype)
    labels[0] = 0
    path = tmp_path / "b.block"
    plane_dtype = np.dtype(np.uint32)
    offset = _labels._planes_nbytes(shape, plane_dtype)
    for slab_bytes in (2**20, 1):  # one slab; one plane per slab
        monkeypatch.setattr(_labels, "_SLAB_BYTES", slab_bytes)
        _labels._save_block(path, labels, plane_dtype)
        back = _labels._load_labels(path, shape, offset=offset)
        assert back.dtype == labels.dtype
        np.testing.assert_array_equal(back, labels)
        for axis in range(len(shape)):
            for last, index in ((False, 0), (True, -1)):
                plane = _labels._load_plane(path, shape, axis, last, plane_dtype)
                assert plane.dtype == plane_dtype
                np.testing.assert_array_equal(plane, np.take(labels, index, axis=axis))
    # into a thread's reused buffer: the same values, and the buffer is reused
    buffers = _labels._ThreadBuffers()
    first = _labels._load_labels(path, shape, buffers, offset=offset)
    np.testing.assert_array_equal(first, labels)
    again = _labels._load_labels(path, shape, buffers, offset=offset)
    assert np.shares_memory(first, again)


def test_touching_pairs_hand_case():
    from emseg.blockwise._labels import _touching, _unique_pairs

    a = np.array([[1, 1, 0, 2], [1, 3, 3, 2]], dtype=np.uint64)
    b = np.array([[5, 5, 5, 0], [6, 6, 0, 7]], dtype=np.uint64)
    pairs = _touching(a, b)
    # raster order: (1,5),(1,5) -> one; (1,6),(3,6) kept; (2,7) kept; zeros dropped
    assert pairs.tolist() == [[1, 5], [1, 6], [3, 6], [2, 7]]
    assert _unique_pairs(pairs).tolist() == [[1, 5], [1, 6], [2, 7], [3, 6]]
    assert _touching(np.zeros_like(b), b).shape == (0, 2)


@pytest.mark.parametrize(
    ("roi", "block", "n_workers"),
    [
        ((slice(4, 16), slice(8, 20), slice(0, 17)), (4, 4, 8), 2),  # chunk-aligned box
        ((slice(3, 14), slice(5, 19), slice(2, 15)), (4, 5, 6), 1),  # unaligned: serial
    ],
)
def test_label_roi_equals_cc3d_of_the_crop(tmp_path, roi, block, n_workers, assert_same_labels):
    img = np.zeros((16, 20, 17), np.uint8)  # objects crossing the box's faces
    img[:13, :16, :] = VOLUMES["comb"]
    img[:, 8:20, :16] |= VOLUMES["shells"][:16, :12, :16]
    out = label(
        img,
        out=tmp_path / "roi.zarr",
        roi=roi,
        connectivity=26,
        block_shape=block,
        chunks=4,
        n_workers=n_workers,
        progress=False,
    )[:]
    assert_same_labels(out[roi], reference(img[roi], 26))
    outside = np.ones(img.shape, bool)
    outside[roi] = False
    assert not out[outside].any()


def test_relabel_roi_writes_only_the_box():
    labels = (np.arange(8 * 9 * 10).reshape(8, 9, 10) % 7).astype(np.uint32)
    roi = (slice(2, 6), slice(0, 9), slice(4, 8))
    out = relabel(labels, {3: 30}, roi=roi, block_shape=4, chunks=2, progress=False)[:]
    expected = np.zeros(labels.shape, np.uint64)
    box = labels[roi].astype(np.uint64)
    box[box == 3] = 30
    expected[roi] = box
    np.testing.assert_array_equal(out, expected)


def test_resume_refuses_another_roi(tmp_path):
    img = VOLUMES["random"]
    kw = {"out": tmp_path / "l.zarr", "block_shape": 4, "chunks": 4, "progress": False}
    label(img, roi=(slice(0, 8), slice(0, 8), slice(0, 8)), **kw)
    with pytest.raises(EmsegValueError, match="roi"):
        label(img, roi=(slice(0, 12), slice(0, 8), slice(0, 8)), resume=True, **kw)
