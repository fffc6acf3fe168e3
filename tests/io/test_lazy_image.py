"""LazyImage: numpy basic indexing, Dask conversion and chunk iteration over an ArraySource."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.io import ArraySource, LazyImage


class RecordingSource(ArraySource):
    """An ArraySource that records every region it is asked for."""

    def __init__(self, array, **kwargs):
        super().__init__(array, **kwargs)
        self.regions = []

    def read(self, region):
        assert all(r.step is None and 0 <= r.start <= r.stop for r in region)
        self.regions.append(region)
        return super().read(region)


def make(array, axes=None, chunks=None):
    axes = axes or "zyx"[3 - array.ndim :] if array.ndim <= 3 else "czyx"
    n_spatial = sum(a in "zyx" for a in axes)
    return LazyImage(RecordingSource(array, chunks=chunks), spacing=(1.0,) * n_spatial, axes=axes)


def index_strategy(shape):
    return hnp.basic_indices(shape, min_dims=0, allow_newaxis=False, allow_ellipsis=True)


@st.composite
def array_and_index(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=7))
    index = draw(index_strategy(shape))
    return shape, index


@given(array_and_index())
def test_getitem_matches_numpy(case):
    shape, index = case
    array = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    img = make(array)
    result = img[index]
    expected = array[index]
    assert np.shape(result) == np.shape(expected)
    assert np.asarray(result).dtype == array.dtype
    np.testing.assert_array_equal(result, expected)
    # the box read never exceeds what the index covers
    for region in img._source.regions:
        assert len(region) == len(shape)


@pytest.mark.parametrize(
    "index",
    [
        np.s_[::-1],
        np.s_[5:1:-2, :, -1],
        np.s_[-3:, ..., ::-3],
        np.s_[..., 2],
        np.s_[1, 2, 3],
        np.s_[np.int64(2), -1],
        np.s_[10:20],
        np.s_[3:3],
        np.s_[:, 7:0:-1, 1::4],
    ],
)
def test_getitem_hand_picked(index):
    array = np.arange(6 * 8 * 9).reshape(6, 8, 9)
    np.testing.assert_array_equal(make(array)[index], array[index])


def test_reads_only_the_covered_box():
    array = np.arange(6 * 8 * 9).reshape(6, 8, 9)
    img = make(array)
    img[1:5:2, 7:2:-2, 4]
    # one read; z within 1..4 (step applied after reading), y 3..7 exactly, x 4 only
    [(z, y, x)] = img._source.regions
    assert z.start == 1
    assert 4 <= z.stop <= 5
    assert (y, x) == (slice(3, 8), slice(4, 5))


def test_bad_indices():
    img = make(np.zeros((3, 4, 5)))
    with pytest.raises(IndexError, match=r"out of bounds"):
        img[3]
    with pytest.raises(IndexError, match=r"out of bounds"):
        img[0, -5]
    with pytest.raises(IndexError, match=r"too many indices"):
        img[0, 0, 0, 0]
    with pytest.raises(IndexError, match=r"single ellipsis"):
        img[..., 0, ...]
    with pytest.raises(EmsegTypeError, match=r"basic indexing only.*ndarray"):
        img[np.array([0, 2])]
    with pytest.raises(EmsegTypeError, match=r"basic indexing only"):
        img[None]


def test_properties_and_array_protocol():
    array = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    img = LazyImage(
        ArraySource(array, chunks=(1, 2, 4, 5)),
        spacing=(30, 4, 4),
        axes="czyx",
        channel_names=("a", "b"),
    )
    assert img.shape == (2, 3, 4, 5)
    assert img.ndim == 4
    assert len(img) == 2
    assert img.size == array.size
    assert img.nbytes == array.nbytes
    assert img.spatial_shape == (3, 4, 5)
    assert img.chunks == (1, 2, 4, 5)
    assert img.spacing == (30.0, 4.0, 4.0)
    assert img.channel_names == ("a", "b")
    np.testing.assert_array_equal(np.asarray(img), array)
    np.testing.assert_array_equal(np.asarray(img, dtype=np.float32), array.astype(np.float32))
    np.testing.assert_array_equal(img.read(), array)
    assert "czyx" in repr(img)


def test_chunks_are_clipped_to_shape():
    assert ArraySource(np.zeros((3, 4)), chunks=(10, 2)).chunks == (3, 2)
    assert ArraySource(np.zeros((0, 4)), chunks=(5, 5)).chunks == (1, 4)


@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    chunks=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
)
def test_to_dask_and_iter_chunks(shape, chunks):
    array = np.random.default_rng(0).integers(0, 100, size=shape)
    img = make(array, chunks=chunks)
    d = img.to_dask()
    assert d.chunksize == tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))
    np.testing.assert_array_equal(d.compute(), array)
    np.testing.assert_array_equal(img.to_dask(chunks=(2, 2, 2))[1:, ::2].compute(), array[1:, ::2])
    # the chunk grid tiles the image exactly once
    cover = np.zeros(shape, dtype=int)
    for region in img.iter_chunks():
        cover[region] += 1
        assert all(r.stop - r.start <= c for r, c in zip(region, img.chunks, strict=True))
    assert (cover == 1).all()


def test_dtype_is_enforced():
    class WrongDtype(ArraySource):
        def read(self, region):
            return super().read(region).astype(np.float64)

    img = LazyImage(WrongDtype(np.ones((2, 3), np.uint8)), spacing=(1, 1), axes="yx")
    assert img[...].dtype == np.uint8


def test_constructor_validation():
    with pytest.raises(EmsegValueError, match=r"`axes` 'yx' has 2 letters but the data has 3"):
        LazyImage(ArraySource(np.zeros((2, 3, 4))), spacing=(1, 1), axes="yx")
    with pytest.raises(EmsegValueError, match=r"`spacing` must have 3 entries"):
        LazyImage(ArraySource(np.zeros((2, 3, 4, 5))), spacing=(1, 1), axes="czyx")
