"""The GIL-free Gaussian kernels equal scipy.ndimage.gaussian_filter bit for bit."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from emseg.blockwise._gaussian import gaussian_crop, gaussian_kernel


def _scipy(data: np.ndarray, sigma, truncate: float = 4.0) -> np.ndarray:
    return ndimage.gaussian_filter(
        data.astype(np.float32), sigma, truncate=truncate, mode="reflect", output=np.float32
    )


def test_kernel_weights_equal_scipy() -> None:
    from scipy.ndimage._filters import _gaussian_kernel1d

    for sigma, radius in [(2.0, 8), (0.7, 3), (3.3, 13), (0.1, 0)]:
        full = _gaussian_kernel1d(sigma, 0, radius)
        np.testing.assert_array_equal(gaussian_kernel(sigma, radius), full[radius:])


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "sigma"),
    [
        ((20, 30, 40), (2.0, 2.0, 2.0)),
        ((3, 5, 2), (2.0, 1.5, 3.0)),  # lines far shorter than the kernel: reflected again
        ((1, 1, 7), (2.0, 2.0, 2.0)),
        ((33, 17), (0.7, 4.2)),
        ((9, 9, 9), (0.0, 1.0, 0.1)),  # sigma 0 skips the axis; radius 0 rounds once
        ((10, 12, 14), (0.05, 1e-16, 2.5)),
    ],
)
def test_equals_scipy_bit_for_bit(rng, shape, sigma, dtype) -> None:
    data = (rng.random(shape) * 200).astype(dtype)
    ref = _scipy(data, sigma)
    got = gaussian_crop(data, sigma=sigma, truncate=4.0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    crop = tuple(slice(s // 4, s - s // 3) for s in shape)
    np.testing.assert_array_equal(
        gaussian_crop(data, sigma=sigma, truncate=4.0, crop=crop), ref[crop]
    )


@given(
    shape=st.tuples(*(st.integers(1, 12),) * 3),
    sigma=st.tuples(*(st.floats(0.0, 3.0),) * 3),
    truncate=st.sampled_from([1.0, 2.5, 4.0]),
    data=st.data(),
)
def test_any_crop_equals_scipy(shape, sigma, truncate, data) -> None:
    image = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    crop = []
    for n in shape:
        lo = data.draw(st.integers(0, n - 1))
        crop.append(slice(lo, data.draw(st.integers(lo + 1, n))))
    ref = _scipy(image, sigma, truncate)[tuple(crop)]
    np.testing.assert_array_equal(
        gaussian_crop(image, sigma=sigma, truncate=truncate, crop=tuple(crop)), ref
    )


def test_threads_give_the_same_result(rng) -> None:
    """The kernels run without the GIL; concurrent calls must not interfere."""
    blocks = [rng.random((24, 20, 28), dtype=np.float32) for _ in range(4)]
    results: list[np.ndarray | None] = [None] * 4

    def work(i: int) -> None:
        results[i] = gaussian_crop(blocks[i], sigma=(1.5, 2.0, 2.5), truncate=4.0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b, r in zip(blocks, results, strict=True):
        np.testing.assert_array_equal(r, _scipy(b, (1.5, 2.0, 2.5)))
