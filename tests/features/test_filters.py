"""Filter bank against scipy / scikit-image, physical units, blockwise = in memory."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import (
    multiscale_basic_features,
    structure_tensor,
    structure_tensor_eigenvalues,
)

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.features import (
    ALL_FEATURES,
    FeatureSpec,
    compute_features,
    compute_features_blockwise,
    default_scales,
    feature_halo,
    feature_names,
    n_features,
    symmetric_eigenvalues,
)


def _interior(a: np.ndarray, m: int) -> np.ndarray:
    return a[(slice(None),) + (slice(m, -m),) * (a.ndim - 1)]


@pytest.mark.parametrize("shape", [(24, 28, 30), (40, 44)])
def test_gaussian_and_hessian_equal_skimage(rng, shape):
    img = rng.random(shape).astype(np.float32)
    spec = FeatureSpec(scales=(1.0, 2.0), features=("gaussian", "hessian"), normalize=False)
    ours = compute_features(img, spec=spec)
    sk = multiscale_basic_features(
        img, intensity=True, edges=False, texture=True, sigma_min=1, sigma_max=2, num_sigma=2
    )
    sk = np.moveaxis(sk, -1, 0)
    assert ours.shape == sk.shape
    assert ours.dtype == np.float32
    # skimage smooths with mode="nearest"; compare away from the border
    np.testing.assert_allclose(_interior(ours, 10), _interior(sk, 10), rtol=1e-5, atol=1e-6)


def test_gaussian_equals_scipy_with_spacing(rng):
    img = rng.integers(0, 255, (12, 40, 40)).astype(np.uint8)
    spacing = (40.0, 4.0, 4.0)
    spec = FeatureSpec(scales=(8.0, 40.0), features=("gaussian", "dog"))
    f = compute_features(img, spacing=spacing, spec=spec)
    ref = ndimage.gaussian_filter(img.astype(np.float32), (0.2, 2.0, 2.0), mode="reflect")
    np.testing.assert_allclose(f[0], ref, rtol=1e-6, atol=1e-4)
    small = ndimage.gaussian_filter(img.astype(np.float32), (0.66, 6.6, 6.6), mode="reflect")
    big = ndimage.gaussian_filter(img.astype(np.float32), (1.0, 10.0, 10.0), mode="reflect")
    np.testing.assert_allclose(f[3], big - small, rtol=1e-5, atol=1e-3)


def test_gradient_log_against_scipy_gaussian_derivatives():
    # a smooth ramp-Gaussian: finite differences of a well-sampled smooth image
    # agree with scipy's Gaussian derivative filters
    z, y, x = np.meshgrid(*[np.arange(48.0)] * 3, indexing="ij")
    img = np.exp(-((z - 24) ** 2 + (y - 22) ** 2 + (x - 25) ** 2) / (2 * 6.0**2)).astype(np.float32)
    spec = FeatureSpec(scales=(3.0,), features=("gradient", "log"), normalize=False)
    f = compute_features(img, spec=spec)
    grad = ndimage.gaussian_gradient_magnitude(img.astype(np.float64), 3.0)
    lap = ndimage.gaussian_laplace(img.astype(np.float64), 3.0)
    inner = (slice(12, -12),) * 3
    assert np.abs(f[0][inner] - grad[inner]).max() < 0.01 * grad.max()
    assert np.abs(f[1][inner] - lap[inner]).max() < 0.03 * np.abs(lap).max()


def test_structure_tensor_against_skimage(rng):
    img = ndimage.gaussian_filter(rng.random((64, 64)), 2).astype(np.float32)
    spec = FeatureSpec(scales=(2.0,), features=("structure",), normalize=False)
    f = compute_features(img, spec=spec)
    # same construction: gradient of G_2 by central differences, products smoothed with sigma 1
    g = ndimage.gaussian_filter(img, 2.0, mode="reflect", output=np.float32)
    gy, gx = (ndimage.correlate1d(g, [-0.5, 0, 0.5], axis=a, mode="reflect") for a in (0, 1))
    ent = [ndimage.gaussian_filter(p, 1.0, mode="reflect") for p in (gy * gy, gy * gx, gx * gx)]
    ev = np.linalg.eigvalsh(np.stack([np.stack(ent[:2], -1), np.stack(ent[1:], -1)], -2))
    np.testing.assert_allclose(f[0], ev[..., 1], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(f[1], ev[..., 0], rtol=1e-4, atol=1e-7)
    # scikit-image's structure tensor of the pre-smoothed image uses Sobel derivatives
    # (8x central differences): same up to that factor and the Sobel cross-smoothing
    sk = structure_tensor_eigenvalues(structure_tensor(g, sigma=1.0, mode="reflect")) / 64.0
    np.testing.assert_allclose(_interior(f, 6), _interior(sk, 6), rtol=0.15, atol=2e-5)


def test_symmetric_eigenvalues_against_numpy(rng):
    m = rng.normal(size=(500, 3, 3))
    m = m + np.swapaxes(m, 1, 2)
    m[:10] = np.diag([1.0, 1.0, 1.0])  # degenerate
    entries = [m[:, i, j].astype(np.float32) for i in range(3) for j in range(i, 3)]
    ours = symmetric_eigenvalues(entries)
    ref = np.linalg.eigvalsh(m.astype(np.float32).astype(np.float64))[:, ::-1].T
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    m2 = m[:, :2, :2]
    ours2 = symmetric_eigenvalues([m2[:, 0, 0], m2[:, 0, 1], m2[:, 1, 1]])
    np.testing.assert_allclose(ours2, np.linalg.eigvalsh(m2)[:, ::-1].T, rtol=1e-5, atol=1e-5)


def test_sphere_hessian_is_isotropic_in_nm():
    """A ball rendered in nm on an anisotropic grid answers the same along z and x."""

    def ball(spacing):
        n = [round(400 / s) for s in spacing]
        grids = np.meshgrid(
            *[(np.arange(k) - k / 2 + 0.5) * s for k, s in zip(n, spacing, strict=False)],
            indexing="ij",
        )
        r = np.sqrt(sum(g**2 for g in grids))
        return (1 / (1 + np.exp((r - 100.0) / 5.0))).astype(np.float32), n

    spec = FeatureSpec(scales=(40.0,), features=("hessian", "gradient"))
    iso, n_iso = ball((10.0, 10.0, 10.0))
    ani, n_ani = ball((20.0, 10.0, 10.0))
    f_iso = compute_features(iso, spacing=(10.0, 10.0, 10.0), spec=spec)
    f_ani = compute_features(ani, spacing=(20.0, 10.0, 10.0), spec=spec)
    # probe 100 nm from the centre, along z and along x
    cz, cy, cx = n_ani[0] // 2, n_ani[1] // 2, n_ani[2] // 2
    along_z = f_ani[:, cz + 5, cy, cx]  # 5 voxels * 20 nm (+ half voxel offset both ways)
    along_x = f_ani[:, cz, cy, cx + 10]
    np.testing.assert_allclose(along_z, along_x, rtol=0.05, atol=0.01)
    # and equal to the isotropic rendering
    c = n_iso[0] // 2
    np.testing.assert_allclose(f_iso[:, c, c, c + 10], along_x, rtol=0.05, atol=0.01)
    # the largest eigenvalue is radial: clearly larger than the two tangential ones
    assert along_x[0] > along_x[1] + 0.05


def test_2d_mode_filters_each_section(rng):
    img = rng.random((4, 30, 30)).astype(np.float32)
    spec3 = FeatureSpec(scales=(2.0,), mode="2d")
    f = compute_features(img, spec=spec3)
    assert f.shape[0] == n_features(spec3, 3) == 8
    for z in range(4):
        one = compute_features(img[z], spec=FeatureSpec(scales=(2.0,)))
        np.testing.assert_allclose(f[:, z], one, rtol=1e-6, atol=1e-6)
    assert len(feature_names(spec3, 3)) == 8


@pytest.mark.parametrize("block", [8, (5, 16, 11), 64])
def test_blockwise_equals_in_memory(rng, block):
    img = rng.integers(0, 255, (14, 37, 29)).astype(np.uint8)
    spacing = (30.0, 6.0, 6.0)
    spec = FeatureSpec(scales=(6.0, 21.0), features=ALL_FEATURES)
    full = compute_features(img, spacing=spacing, spec=spec, n_threads=2)
    out = compute_features_blockwise(
        img,
        spacing=spacing,
        spec=spec,
        block_shape=block,
        chunks=block,
        progress=False,
        n_workers=1,
    )
    assert out.shape == full.shape
    np.testing.assert_array_equal(out[:], full)


def test_blockwise_to_ome_zarr(tmp_path, rng):
    from emseg.io import open_image, write_image

    img = rng.random((40, 48)).astype(np.float32)
    spec = FeatureSpec(scales=(2.0,), features=("gaussian", "structure"))
    path = tmp_path / "f.ome.zarr"
    compute_features_blockwise(
        img, out=path, spacing=(2.0, 2.0), spec=spec, chunks=16, progress=False
    )
    back = open_image(path)
    assert back.axes == "cyx"
    assert back.shape == (3, 40, 48)
    assert back.spacing == (2.0, 2.0)
    assert back.channel_names == tuple(feature_names(spec, 2))
    np.testing.assert_array_equal(back[:], compute_features(img, spacing=(2.0, 2.0), spec=spec))
    # a lazy image is read whole, with its own spacing
    write_image(img, tmp_path / "img.ome.zarr", spacing=(2.0, 2.0))
    lazy = open_image(tmp_path / "img.ome.zarr")
    np.testing.assert_array_equal(
        compute_features(lazy, spec=spec), compute_features(img, spacing=(2.0, 2.0), spec=spec)
    )


def test_variance_is_local_standard_deviation(rng):
    # float64 reference: sqrt(G * I^2 - (G * I)^2), sigma in nm through the spacing
    img = rng.integers(0, 255, (12, 30, 26)).astype(np.uint8)
    spacing = (20.0, 5.0, 5.0)
    spec = FeatureSpec(scales=(10.0, 20.0), features=("variance",))
    ours = compute_features(img, spacing=spacing, spec=spec)
    assert ours.shape == (2, *img.shape)
    assert ours.dtype == np.float32
    assert feature_names(spec, 3) == ["variance@10nm", "variance@20nm"]
    f = img.astype(np.float64)
    for i, s in enumerate(spec.scales):
        sig = tuple(s / sp for sp in spacing)
        m = ndimage.gaussian_filter(f, sig, mode="reflect")
        ref = np.sqrt(np.maximum(ndimage.gaussian_filter(f * f, sig, mode="reflect") - m * m, 0))
        np.testing.assert_allclose(ours[i], ref, rtol=1e-4, atol=1e-2)
    # hand case: a +-10 checkerboard around 100 has standard deviation 10 in a wide window;
    # a constant image has 0; never scale-normalised
    z, y, x = np.indices((16, 16, 16))
    board = 100.0 + 10.0 * (-1.0) ** (z + y + x)
    for normalize in (True, False):
        spec = FeatureSpec(scales=(4.0,), features=("variance",), normalize=normalize)
        v = compute_features(board, spec=spec)[0]
        np.testing.assert_allclose(v, 10.0, rtol=1e-3)
        assert np.all(compute_features(np.full((8, 8), 7.0), spec=spec) == 0)
    # optional: not in the default bank, placed after the default families
    spec = FeatureSpec(scales=(3.0,), features=("variance", "gaussian"))
    assert spec.features == ("gaussian", "variance")
    assert "variance" not in FeatureSpec(scales=(3.0,)).features


def test_halo_and_defaults():
    assert default_scales((50.0, 4.0, 4.0)) == (2.8, 4.0, 6.4, 14.0, 20.0)
    spec = FeatureSpec(scales=(4.0,), features=("gaussian",))
    assert feature_halo(spec, (50.0, 4.0, 4.0)) == (0, 4, 4)
    spec = FeatureSpec(scales=(4.0,), features=("structure",))
    assert feature_halo(spec, (4.0, 4.0, 4.0)) == (4 + 2 + 2,) * 3


def test_bad_input(rng):
    img = rng.random((10, 10))
    img[3, 3] = np.nan
    with pytest.raises(EmsegValueError, match="NaN"):
        compute_features(img)
    with pytest.raises(EmsegTypeError, match="dtype"):
        compute_features(np.zeros((5, 5), bool))
    with pytest.raises(EmsegValueError, match="features"):
        FeatureSpec(scales=(1.0,), features=("sobel",))
    with pytest.raises(EmsegValueError, match="scales"):
        FeatureSpec(scales=(-1.0,))
    with pytest.raises(EmsegValueError, match="spacing"):
        compute_features(np.zeros((5, 5)), spacing=(1.0, 1.0, 1.0))
