"""Pyramid planning and the mean / mode downsampling kernels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skimage.transform import downscale_local_mean

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.io import downsample_mean, downsample_mode, plan_levels


# --------------------------------------------------------------------------- plan_levels
def test_plan_isotropic_halves_every_axis_until_one_chunk():
    levels = plan_levels((512, 512, 512), spacing=(4, 4, 4), axes="zyx", chunks=(64, 128, 128))
    assert [lv.factors for lv in levels] == [(1, 1, 1)] + [(2, 2, 2)] * 3
    assert [lv.shape for lv in levels] == [(512,) * 3, (256,) * 3, (128,) * 3, (64,) * 3]
    assert levels[-1].spacing == (32.0, 32.0, 32.0)
    # first voxel centre of level k sits (s_k - s_0) / 2 from level 0's
    assert levels[1].translation == (2.0, 2.0, 2.0)
    assert levels[3].translation == (14.0, 14.0, 14.0)


def test_plan_anisotropic_downsamples_xy_first():
    levels = plan_levels((256, 4096, 4096), spacing=(40, 4, 4), axes="zyx", chunks=(64, 128, 128))
    assert [lv.factors for lv in levels[1:]] == [(1, 2, 2)] * 3 + [(2, 2, 2)] * 2
    assert [lv.spacing for lv in levels] == [
        (40.0, 4.0, 4.0),
        (40.0, 8.0, 8.0),
        (40.0, 16.0, 16.0),
        (40.0, 32.0, 32.0),
        (80.0, 64.0, 64.0),
        (160.0, 128.0, 128.0),
    ]
    assert levels[1].translation == (0.0, 2.0, 2.0)
    assert levels[-1].shape == (64, 128, 128)


def test_plan_never_downsamples_channels_and_handles_odd_sizes():
    levels = plan_levels((3, 100, 301), spacing=(5, 5), axes="cyx", chunks=(1, 40, 40))
    assert all(lv.factors[0] == 1 and lv.shape[0] == 3 for lv in levels)
    assert levels[1].shape == (3, 50, 151)
    assert levels[2].shape == (3, 25, 76)
    # x (76) is still longer than a chunk, so y and x are halved together once more
    assert levels[3].shape == (3, 13, 38)
    assert len(levels) == 4


def test_plan_small_image_has_one_level():
    levels = plan_levels((20, 30, 30), spacing=(1, 1, 1), axes="zyx", chunks=(64, 128, 128))
    assert len(levels) == 1
    levels = plan_levels((20, 30, 30), spacing=(1, 1, 1), axes="zyx", chunks=(8, 8, 8))
    assert len(levels) == 1  # no axis longer than min_size=32


def test_plan_spacing_length_checked():
    with pytest.raises(EmsegValueError, match="`spacing` must have 3 entries"):
        plan_levels((10, 10, 10), spacing=(1, 1), axes="zyx", chunks=(5, 5, 5))


# --------------------------------------------------------------------------- mean
def test_mean_hand_cases():
    np.testing.assert_array_equal(
        downsample_mean(np.array([[1, 2, 7]], np.uint8), (1, 2)), [[2, 7]]
    )
    # 2.5 -> 2 (half to even), 3.5 -> 4
    np.testing.assert_array_equal(
        downsample_mean(np.array([[2, 3, 3, 4]], np.uint16), (1, 2)), [[2, 4]]
    )
    out = downsample_mean(np.array([[0, 1], [1, 1]], np.float32), (2, 2))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.75]])
    # no rescaling: a uint16 image keeps its raw values
    big = np.full((2, 2), 60000, np.uint16)
    assert downsample_mean(big, (2, 2))[0, 0] == 60000


@given(
    data=hnp.arrays(
        st.sampled_from([np.uint8, np.uint16, np.int16, np.uint32, np.float32]),
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=8).map(
            lambda s: tuple(2 * x for x in s)
        ),
        elements={"min_value": 0, "max_value": 200},
    ),
    axis_mask=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_mean_equals_skimage_on_even_shapes(data, axis_mask):
    factors = tuple(2 if m else 1 for m in axis_mask[: data.ndim])
    ours = downsample_mean(data, factors)
    ref = downscale_local_mean(data.astype(np.float64), factors)
    assert ours.dtype == data.dtype
    if data.dtype.kind == "f":
        np.testing.assert_allclose(ours, ref.astype(data.dtype), rtol=1e-6)
    else:
        np.testing.assert_array_equal(ours, np.rint(ref).astype(data.dtype))


def test_mean_odd_shape_uses_existing_voxels(rng):
    data = rng.integers(0, 1000, (5, 7, 3)).astype(np.float64)
    out = downsample_mean(data, (2, 2, 2))
    assert out.shape == (3, 4, 2)
    for z, y, x in itertools.product(range(3), range(4), range(2)):
        window = data[2 * z : 2 * z + 2, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2]
        assert out[z, y, x] == pytest.approx(window.mean())


def test_mean_4d_channels_kept_apart(rng):
    data = rng.integers(0, 255, (2, 4, 6, 6), dtype=np.uint8)
    out = downsample_mean(data, (1, 2, 2, 2))
    for c in range(2):
        np.testing.assert_array_equal(out[c], downsample_mean(data[c], (2, 2, 2)))


def test_mean_validation():
    with pytest.raises(EmsegValueError, match="`factors`"):
        downsample_mean(np.zeros((4, 4), np.uint8), (3, 1))
    with pytest.raises(EmsegValueError, match="`factors`"):
        downsample_mean(np.zeros((4, 4), np.uint8), (2, 2, 2))
    with pytest.raises(EmsegTypeError, match="boolean"):
        downsample_mean(np.zeros((4, 4), bool), (2, 2))
    with pytest.raises(EmsegValueError, match="channel"):
        downsample_mean(np.zeros((2, 4, 4, 4), np.uint8), (2, 2, 2, 2))


# --------------------------------------------------------------------------- mode
def _brute_mode(data: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    out_shape = tuple(-(-n // f) for n, f in zip(data.shape, factors, strict=True))
    out = np.empty(out_shape, data.dtype)
    for idx in itertools.product(*(range(n) for n in out_shape)):
        window = data[tuple(slice(i * f, i * f + f) for i, f in zip(idx, factors, strict=True))]
        values, counts = np.unique(window, return_counts=True)
        out[idx] = values[np.argmax(counts)]  # first max = smallest label among ties
    return out


def test_mode_hand_cases():
    np.testing.assert_array_equal(
        downsample_mode(np.array([[1, 2], [2, 1]], np.uint32), (2, 2)), [[1]]
    )
    np.testing.assert_array_equal(
        downsample_mode(np.array([[7, 3, 3, 3], [7, 7, 9, 3]], np.uint64), (2, 2)), [[7, 3]]
    )
    np.testing.assert_array_equal(
        downsample_mode(np.array([[5, 3, 3]], np.uint16), (1, 2)), [[3, 3]]
    )
    big = np.array([[2**63 + 5, 2**63 + 5], [1, 2]], np.uint64)
    assert downsample_mode(big, (2, 2))[0, 0] == 2**63 + 5  # exact for large ids


@given(
    data=hnp.arrays(
        st.sampled_from([np.uint8, np.uint16, np.uint32, np.uint64, np.int32]),
        hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=9),
        elements={"min_value": 0, "max_value": 4},
    ),
    axis_mask=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_mode_equals_brute_force(data, axis_mask):
    factors = tuple(2 if m else 1 for m in axis_mask[: data.ndim])
    ours = downsample_mode(data, factors)
    assert ours.dtype == data.dtype
    np.testing.assert_array_equal(ours, _brute_mode(data, factors))
    assert set(np.unique(ours)) <= set(np.unique(data))


def test_mode_bool_and_validation():
    mask = np.array([[True, True], [False, True]])
    out = downsample_mode(mask, (2, 2))
    assert out.dtype == np.bool_
    assert out[0, 0]
    with pytest.raises(EmsegTypeError, match="integer label"):
        downsample_mode(np.zeros((4, 4), np.float32), (2, 2))
