"""Resuming is allowed with the same block function and refused with another one.

A callable object (e.g. the mapping of ``relabel``) must be identified by its
state, not by ``repr`` (which holds a memory address that differs in every
process and for every new object).
"""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

from emseg.blockwise import relabel
from emseg.blockwise._labels import _Remap
from emseg.blockwise._map import func_identity


def test_identity_is_stable_and_state_dependent():
    keys = np.array([1, 2], np.uint64)
    a = func_identity(_Remap(keys, np.array([5, 6], np.uint64)))
    assert a == func_identity(_Remap(keys.copy(), np.array([5, 6], np.uint64)))
    assert a != func_identity(_Remap(keys, np.array([5, 7], np.uint64)))
    assert func_identity(np.add) != func_identity(np.subtract)
    assert func_identity(functools.partial(np.add, 1)) != func_identity(
        functools.partial(np.add, 2)
    )
    code = (
        "import numpy as np; from emseg.blockwise._map import func_identity; "
        "from emseg.blockwise._labels import _Remap; "
        "print(func_identity(_Remap(np.array([1, 2], np.uint64), np.array([5, 6], np.uint64))))"
    )
    other_process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other_process == a


def test_relabel_resume_with_same_mapping(tmp_path):
    labels = np.arange(6 * 8 * 8, dtype=np.uint32).reshape(6, 8, 8) % 5
    out = tmp_path / "r.zarr"
    kw = {"block_shape": 4, "chunks": 4, "progress": False}
    first = relabel(labels, {1: 10, 2: 20}, out=out, **kw)[:]
    # a new mapping object with the same content: resuming a finished job is a no-op
    again = relabel(labels, {1: 10, 2: 20}, out=out, resume=True, **kw)[:]
    np.testing.assert_array_equal(first, again)
    expected = labels.astype(np.uint64)
    expected[labels == 1] = 10
    expected[labels == 2] = 20
    np.testing.assert_array_equal(again, expected)
    with pytest.raises(ValueError, match="different parameters"):
        relabel(labels, {1: 11, 2: 20}, out=out, resume=True, **kw)
