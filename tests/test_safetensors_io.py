"""The shared checked-safetensors layout behind forest and edge-classifier files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from emseg._safetensors_io import check_writable, digest, read_checked, write_checked
from emseg.errors import DatasetNotFoundError, FormatError, OutputExistsError

KW = {"fmt": "emseg.test", "version": 3}
READ = dict(KW, what="emseg test file", fix="Write it again.")


def _write(path):
    tensors = {"b": np.arange(6, dtype=np.int32).reshape(2, 3), "a": np.ones(4, np.float32)}
    return write_checked(path, tensors, meta_json=json.dumps({"x": 1}), **KW), tensors


def test_round_trip_and_checksum(tmp_path):
    from safetensors import safe_open

    p, tensors = _write(tmp_path / "f.safetensors")
    got = read_checked(p, **READ)
    assert json.loads(got.meta_json) == {"x": 1}
    assert sorted(got.tensors) == ["a", "b"]
    for k, v in tensors.items():
        np.testing.assert_array_equal(got.tensors[k], v)
        assert got.tensors[k].dtype == v.dtype
    with safe_open(str(p), framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == "emseg.test"
    assert meta["format_version"] == "3"
    assert meta["sha256"] == digest('{"x": 1}', tensors)
    # the digest sees names, shapes and bytes
    assert digest('{"x": 1}', {**tensors, "a": np.zeros(4, np.float32)}) != meta["sha256"]
    assert digest('{"x": 1}', {**tensors, "b": tensors["b"].reshape(3, 2)}) != meta["sha256"]
    assert not list(tmp_path.glob(".*partial"))


def test_refusals(tmp_path):
    from safetensors.numpy import save_file

    p, tensors = _write(tmp_path / "f.safetensors")
    with pytest.raises(OutputExistsError, match="overwrite"):
        check_writable(p, what="test", overwrite=False)
    assert check_writable(p, what="test", overwrite=True) == p
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        read_checked(tmp_path / "missing", **READ)
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0x01
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"checksum.*Write it again"):
        read_checked(bad, **READ)
    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(FormatError, match="pickle"):
        read_checked(bad, **READ)
    bad.write_bytes(b"abc")
    with pytest.raises(FormatError, match="too short"):
        read_checked(bad, **READ)
    save_file(tensors, str(bad), metadata={"format": "pt"})
    with pytest.raises(FormatError, match="not an emseg test file"):
        read_checked(bad, **READ)
    with pytest.raises(FormatError, match=r"version '3'; this emseg reads version 4"):
        read_checked(p, **dict(READ, version=4))
