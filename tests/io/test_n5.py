"""N5 reader, checked against tensorstore's independent N5 writer and hand-built blocks."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import tensorstore as ts
from hypothesis import given
from hypothesis import strategies as st

import emseg.io._n5 as n5mod
from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError, SpacingWarning
from emseg.io import open_image

COMPRESSIONS = [
    {"type": "raw"},
    {"type": "gzip"},
    {"type": "gzip", "useZlib": True},
    {"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
    {"type": "zstd"},
    {"type": "xz"},
    {"type": "bzip2"},
]
DTYPES = [
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
]


def ts_write(path: Path, data: np.ndarray, block_zyx, compression=None, region=None) -> None:
    """Write `data` (z-y-x) as an N5 dataset with tensorstore (x-y-z on disk)."""
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(path)},
            "metadata": {
                "dimensions": list(reversed(data.shape)),
                "blockSize": list(reversed(block_zyx)),
                "dataType": str(data.dtype),
                "compression": compression or {"type": "raw"},
            },
        },
        create=True,
        delete_existing=True,
    ).result()
    if region is None:
        store[...] = data.T  # tensorstore indexes N5 in x-y-z order
    else:
        store[tuple(reversed(region))] = data[region].T


def random_array(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 23), st.integers(1, 19)),
    block=st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
    dtype=st.sampled_from(DTYPES),
    compression=st.sampled_from(COMPRESSIONS),
    seed=st.integers(0, 2**16),
)
def test_roundtrip_against_tensorstore(shape, block, dtype, compression, seed):
    rng = np.random.default_rng(seed)
    data = random_array(rng, shape, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        ts_write(Path(tmp) / "c.n5" / "raw", data, block, compression)
        img = open_image(Path(tmp) / "c.n5", dataset="raw", spacing=1)
        assert img.shape == shape
        assert img.dtype == np.dtype(dtype)
        assert img.chunks == tuple(min(b, s) for b, s in zip(block, shape, strict=True))
        assert img.axes == "zyx"
        np.testing.assert_array_equal(img[...], data)
        np.testing.assert_array_equal(img[1:, ::2, -3::-2], data[1:, ::2, -3::-2])
        np.testing.assert_array_equal(img[-1, 2:9, :], data[-1, 2:9, :])
        np.testing.assert_array_equal(img.to_dask().compute(), data)


@pytest.mark.parametrize("shape", [(13, 17), (2, 3, 9, 11)])
def test_2d_and_4d(tmp_path, rng, shape):
    data = rng.integers(0, 1000, size=shape).astype(np.uint16)
    ts_write(tmp_path / "c.n5" / "d", data, (4,) * len(shape), {"type": "gzip"})
    img = open_image(tmp_path / "c.n5", dataset="d", spacing=1)
    assert img.axes == ("yx" if len(shape) == 2 else "czyx")
    np.testing.assert_array_equal(img[...], data)


def test_missing_blocks_read_as_zero(tmp_path, rng):
    data = rng.integers(1, 255, size=(6, 20, 20)).astype(np.uint8)
    region = (slice(2, 4), slice(4, 12), slice(0, 8))
    ts_write(tmp_path / "c.n5" / "d", data, (2, 4, 4), {"type": "zstd"}, region=region)
    expected = np.zeros_like(data)
    expected[region] = data[region]
    img = open_image(tmp_path / "c.n5", dataset="d", spacing=1)
    np.testing.assert_array_equal(img[...], expected)
    assert not (tmp_path / "c.n5" / "d" / "4").exists()  # really missing on disk


def test_reads_only_touched_blocks(tmp_path, rng, monkeypatch):
    data = rng.integers(0, 255, size=(16, 64, 64)).astype(np.uint8)
    ts_write(tmp_path / "c.n5" / "d", data, (4, 16, 16), {"type": "gzip"})
    img = open_image(tmp_path / "c.n5", dataset="d", spacing=1)
    opened: list[str] = []
    real = n5mod._read_block_file

    def counting(path):
        opened.append(path)
        return real(path)

    monkeypatch.setattr(n5mod, "_read_block_file", counting)
    np.testing.assert_array_equal(img[5, 10:20, 40:41], data[5, 10:20, 40:41])
    # z 5 -> block 1; y 10..19 -> blocks 0, 1; x 40 -> block 2: two blocks, x-y-z paths
    assert sorted(Path(p).relative_to(tmp_path / "c.n5" / "d").as_posix() for p in opened) == [
        "2/0/1",
        "2/1/1",
    ]
    opened.clear()
    img[...]
    assert len(opened) == 4 * 4 * 4


def test_several_datasets_need_a_name(tmp_path, rng):
    data = rng.integers(0, 9, size=(2, 5, 5)).astype(np.uint8)
    ts_write(tmp_path / "c.n5" / "raw", data, (1, 5, 5))
    ts_write(tmp_path / "c.n5" / "labels" / "cells", data, (1, 5, 5))
    (tmp_path / "c.n5" / "attributes.json").write_text('{"n5": "2.0.0"}')
    with pytest.raises(EmsegValueError, match=r"2 datasets.*labels/cells.*raw.*dataset="):
        open_image(tmp_path / "c.n5", spacing=1)
    img = open_image(tmp_path / "c.n5", dataset="labels/cells", spacing=1)
    np.testing.assert_array_equal(img[...], data)


def test_single_dataset_is_found(tmp_path, rng):
    data = rng.integers(0, 9, size=(2, 5, 5)).astype(np.uint8)
    ts_write(tmp_path / "c.n5" / "volumes" / "raw", data, (1, 5, 5))
    img = open_image(tmp_path / "c.n5", spacing=1)
    np.testing.assert_array_equal(img[...], data)
    # the dataset folder itself also opens
    img = open_image(tmp_path / "c.n5" / "volumes" / "raw", spacing=1)
    np.testing.assert_array_equal(img[...], data)


def test_missing_dataset_lists_contents(tmp_path, rng):
    data = rng.integers(0, 9, size=(2, 5, 5)).astype(np.uint8)
    ts_write(tmp_path / "c.n5" / "raw", data, (1, 5, 5))
    with pytest.raises(DatasetNotFoundError, match=r"'nope'.*raw \(2, 5, 5\) uint8"):
        open_image(tmp_path / "c.n5", dataset="nope")


def _write_multiscale(root: Path, rng, group_attrs, level_attrs):
    s0 = rng.integers(0, 255, size=(8, 16, 16)).astype(np.uint8)
    s1 = s0[::2, ::2, ::2].copy()
    ts_write(root / "ms" / "s0", s0, (4, 8, 8), {"type": "gzip"})
    ts_write(root / "ms" / "s1", s1, (4, 8, 8), {"type": "gzip"})
    (root / "attributes.json").write_text('{"n5": "2.0.0"}')
    (root / "ms" / "attributes.json").write_text(json.dumps(group_attrs))
    for i, extra in enumerate(level_attrs):
        p = root / "ms" / f"s{i}" / "attributes.json"
        attrs = json.loads(p.read_text())
        attrs.update(extra)
        p.write_text(json.dumps(attrs))
    return s0, s1


def test_multiscale_n5_viewer_convention(tmp_path, rng):
    s0, s1 = _write_multiscale(
        tmp_path / "c.n5",
        rng,
        {"pixelResolution": {"dimensions": [4.0, 4.0, 40.0], "unit": "nm"}},
        [{"downsamplingFactors": [1, 1, 1]}, {"downsamplingFactors": [2, 2, 2]}],
    )
    img0 = open_image(tmp_path / "c.n5", dataset="ms")
    img1 = open_image(tmp_path / "c.n5", dataset="ms", level=1)
    assert img0.levels == img1.levels == 2
    assert img0.spacing == (40.0, 4.0, 4.0)
    assert img1.spacing == (80.0, 8.0, 8.0)
    np.testing.assert_array_equal(img1[...], s1)
    np.testing.assert_array_equal(img0[...], s0)
    with pytest.raises(EmsegValueError, match=r"`level` must be below 2.*got 2"):
        open_image(tmp_path / "c.n5", dataset="ms", level=2)


def test_multiscale_paintera_resolution_and_scales(tmp_path, rng):
    _write_multiscale(
        tmp_path / "c.n5",
        rng,
        {"resolution": [0.004, 0.005, 0.05], "unit": "um", "scales": [[1, 1, 1], [2, 2, 1]]},
        [{}, {}],
    )
    assert open_image(tmp_path / "c.n5", dataset="ms").spacing == pytest.approx((50.0, 5.0, 4.0))
    # scales[1] is x-y-z: x and y halved, z kept
    assert open_image(tmp_path / "c.n5", dataset="ms", level=1).spacing == pytest.approx(
        (50.0, 10.0, 8.0)
    )


def test_spacing_from_dataset_attributes(tmp_path, rng):
    data = rng.integers(0, 9, size=(3, 4, 5)).astype(np.uint8)
    ts_write(tmp_path / "c.n5" / "d", data, (3, 4, 5))
    p = tmp_path / "c.n5" / "d" / "attributes.json"
    attrs = json.loads(p.read_text())
    p.write_text(json.dumps({**attrs, "pixelResolution": [6, 5, 30]}))  # x-y-z, nm
    assert open_image(tmp_path / "c.n5", dataset="d").spacing == (30.0, 5.0, 6.0)
    p.write_text(
        json.dumps(
            {
                **attrs,
                "transform": {
                    "axes": ["z", "y", "x"],
                    "scale": [0.03, 6, 7],
                    "units": ["um", "nm", "nm"],
                },
            }
        )
    )
    assert open_image(tmp_path / "c.n5", dataset="d").spacing == (30.0, 6.0, 7.0)
    p.write_text(json.dumps(attrs))
    with pytest.warns(SpacingWarning, match=r"spacing="):
        img = open_image(tmp_path / "c.n5", dataset="d")
    assert img.spacing == (1.0, 1.0, 1.0)
    assert not img.spacing_known


def _block_file(data_zyx: np.ndarray, payload: bytes, mode: int = 0) -> bytes:
    header = struct.pack(">HH", mode, data_zyx.ndim)
    header += struct.pack(f">{data_zyx.ndim}I", *reversed(data_zyx.shape))
    if mode == 1:
        header += struct.pack(">I", data_zyx.size)
    return header + payload


def _hand_dataset(root: Path, shape, block, dtype, compression: dict) -> None:
    root.mkdir(parents=True)
    (root / "attributes.json").write_text(
        json.dumps(
            {
                "dimensions": list(reversed(shape)),
                "blockSize": list(reversed(block)),
                "dataType": dtype,
                "compression": compression,
            }
        )
    )


def _put_block(root: Path, grid_zyx, content: bytes) -> None:
    p = root.joinpath(*(str(g) for g in reversed(grid_zyx)))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)


def test_hand_built_lz4_and_varlength_blocks(tmp_path, rng):
    """Blocks written byte by byte from the spec: lz4-java framing, mode 1, border blocks."""
    data = rng.integers(0, 60000, size=(3, 5)).astype(np.uint16)
    root = tmp_path / "c.n5" / "d"
    _hand_dataset(root, (3, 5), (2, 4), "uint16", {"type": "lz4", "blockSize": 65536})
    codec = numcodecs.LZ4()
    for gy in range(2):
        for gx in range(2):
            blk = data[gy * 2 : gy * 2 + 2, gx * 4 : gx * 4 + 4]  # border blocks are smaller
            raw = blk.astype(">u2").tobytes()
            compressed = codec.encode(raw)[4:]  # numcodecs prefixes the size; lz4-java does not
            frame = (
                b"LZ4Block" + bytes([0x20 | 5]) + struct.pack("<iii", len(compressed), len(raw), 0)
            )
            end = b"LZ4Block" + bytes([0x10]) + struct.pack("<iii", 0, 0, 0)
            mode = 1 if (gy, gx) == (1, 1) else 0
            _put_block(root, (gy, gx), _block_file(blk, frame + compressed + end, mode))
    img = open_image(tmp_path / "c.n5", dataset="d", spacing=1)
    np.testing.assert_array_equal(img[...], data)


def test_old_style_compression_type_and_fill_value(tmp_path):
    root = tmp_path / "c.n5" / "d"
    root.mkdir(parents=True)
    (root / "attributes.json").write_text(
        json.dumps(
            {
                "dimensions": [4, 2],
                "blockSize": [2, 2],
                "dataType": "int16",
                "compressionType": "gzip",
                "fillValue": 7,
            }
        )
    )
    blk = np.array([[-1, 2], [3, -4]], dtype=np.int16)
    _put_block(root, (0, 0), _block_file(blk, numcodecs.GZip().encode(blk.astype(">i2").tobytes())))
    img = open_image(tmp_path / "c.n5", dataset="d", spacing=1)
    np.testing.assert_array_equal(img[...], [[-1, 2, 7, 7], [3, -4, 7, 7]])


def test_corrupt_block_is_format_error(tmp_path, rng):
    data = rng.integers(0, 255, size=(2, 8, 8)).astype(np.uint8)
    ts_write(tmp_path / "c.n5" / "d", data, (1, 8, 8), {"type": "gzip"})
    block = tmp_path / "c.n5" / "d" / "0" / "0" / "1"
    block.write_bytes(block.read_bytes()[:20])
    img = open_image(tmp_path / "c.n5", dataset="d", spacing=1)
    np.testing.assert_array_equal(img[0], data[0])
    with pytest.raises(FormatError, match=r"corrupt or truncated"):
        img[1]


def test_unsupported_dtype_and_compression(tmp_path):
    _hand_dataset(tmp_path / "a.n5", (2, 2), (2, 2), "complex64", {"type": "raw"})
    with pytest.raises(FormatError, match=r"dataType 'complex64'"):
        open_image(tmp_path / "a.n5", spacing=1)
    _hand_dataset(tmp_path / "b.n5", (2, 2), (2, 2), "uint8", {"type": "snappy"})
    with pytest.raises(FormatError, match=r"compression 'snappy'.*gzip"):
        open_image(tmp_path / "b.n5", spacing=1)


def test_dataset_outside_container_is_refused(tmp_path, rng):
    data = rng.integers(0, 9, size=(2, 5, 5)).astype(np.uint8)
    ts_write(tmp_path / "c.n5" / "raw", data, (1, 5, 5))
    with pytest.raises(EmsegValueError, match=r"inside the container"):
        open_image(tmp_path / "c.n5", dataset="../c.n5/raw")
