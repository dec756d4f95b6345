"""Tests of the classical baselines against known answers on tiny inputs."""

import importlib.util

import numpy as np
import pytest
from scipy import ndimage

from n2s_tf import baselines

HAS_BM3D = importlib.util.find_spec("bm3d") is not None


def _smooth_image(size=48):
    rows, cols = np.indices((size, size)) / size
    return (np.sin(2 * np.pi * rows) * np.cos(2 * np.pi * cols))[..., None].astype(np.float32)


def _psnr(estimate, truth):
    return 10 * np.log10(np.ptp(truth) ** 2 / np.mean((estimate - truth) ** 2))


def test_gaussian_keeps_a_constant():
    image = np.full((9, 11, 1), 3.25, dtype=np.float32)
    out = baselines.gaussian(image, sigma=2.0)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, 3.25, rtol=1e-6)


def test_fourier_lowpass_nyquist_circle_by_hand():
    n = 16
    image = np.random.default_rng(0).normal(size=(n, n, 1)).astype(np.float32)
    out = baselines.fourier_lowpass(image, cutoff=0.5)
    spectrum_in = np.fft.fft2(image[..., 0])
    spectrum_out = np.fft.fft2(out[..., 0])
    for u in range(n):
        for v in range(n):
            fu, fv = ((u + n // 2) % n - n // 2) / n, ((v + n // 2) % n - n // 2) / n
            expected = spectrum_in[u, v] if fu * fu + fv * fv <= 0.25 else 0.0
            assert abs(spectrum_out[u, v] - expected) < 1e-3
    # The corners beyond the circle are gone, so some (but not most) energy is lost.
    assert 0.5 * (image**2).sum() < (out**2).sum() < (image**2).sum()


def test_fourier_lowpass_tiny_cutoff_gives_the_mean():
    image = np.random.default_rng(1).normal(size=(12, 10, 1)).astype(np.float32)
    np.testing.assert_allclose(baselines.fourier_lowpass(image, cutoff=0.01), image.mean(),
                               atol=1e-6)
    with pytest.raises(ValueError, match="cutoff"):
        baselines.fourier_lowpass(image, cutoff=-0.1)


def test_median_removes_a_salt_pixel():
    image = np.zeros((7, 7, 1), dtype=np.float32)
    image[3, 3] = 100.0
    np.testing.assert_array_equal(baselines.median(image, size=3), 0.0)


def test_noise_sigma_estimate():
    rng = np.random.default_rng(2)
    assert abs(baselines.estimate_noise_sigma(rng.normal(0, 0.3, (256, 256))) / 0.3 - 1) < 0.05
    assert abs(baselines.estimate_noise_sigma(rng.normal(0, 2.0, (32, 64, 64))) / 2.0 - 1) < 0.05


def test_nlm_improves_psnr_on_a_noisy_smooth_image():
    clean = _smooth_image()
    noisy = clean + np.random.default_rng(3).normal(0, 0.3, clean.shape).astype(np.float32)
    out = baselines.nlm(noisy)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert _psnr(out, clean) > _psnr(noisy, clean) + 3


@pytest.mark.parametrize("name", ["gaussian", "median", "fourier_lowpass", "nlm"])
@pytest.mark.parametrize("shape", [(24, 20, 2), (8, 12, 10, 2)])
def test_channels_are_filtered_independently(name, shape):
    rng = np.random.default_rng(4)
    image = rng.normal(size=shape).astype(np.float32)
    image[..., 1] = 5 * image[..., 1] + 2  # different noise level and offset per channel
    out = baselines.run_baseline(name, image)
    assert out.shape == shape and out.dtype == np.float32
    for c in range(2):
        alone = baselines.run_baseline(name, image[..., c:c + 1])
        np.testing.assert_allclose(out[..., c], alone[..., 0], rtol=1e-5, atol=1e-5)


def test_volume_filters_use_all_three_spatial_axes():
    volume = np.random.default_rng(5).normal(size=(8, 9, 10, 1)).astype(np.float32)
    np.testing.assert_allclose(baselines.gaussian(volume, sigma=1.5)[..., 0],
                               ndimage.gaussian_filter(volume[..., 0], 1.5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(baselines.fourier_lowpass(volume, cutoff=0.05), volume.mean(),
                               atol=1e-6)
    spike = np.zeros((5, 5, 5, 1), dtype=np.float32)
    spike[2, 2, 2] = 9.0
    np.testing.assert_array_equal(baselines.median(spike), 0.0)


def test_run_baseline_dispatch_and_errors():
    image = np.random.default_rng(6).normal(size=(10, 10, 1)).astype(np.float32)
    np.testing.assert_array_equal(baselines.run_baseline("gaussian", image, sigma=1.0),
                                  baselines.gaussian(image, sigma=1.0))
    with pytest.raises(ValueError, match="unknown baseline 'wiener'"):
        baselines.run_baseline("wiener", image)
    with pytest.raises(ValueError, match="shape"):
        baselines.gaussian(image[..., 0])
    assert set(baselines.BASELINES) == {"gaussian", "median", "fourier_lowpass", "nlm", "bm3d"}


@pytest.mark.skipif(HAS_BM3D, reason="bm3d is installed; its denoising test runs instead")
def test_bm3d_without_the_package_says_how_to_install():
    with pytest.raises(ImportError, match=r"pip install n2s_tf\[bm3d\]"):
        baselines.bm3d(np.zeros((8, 8, 1), dtype=np.float32))


@pytest.mark.skipif(not HAS_BM3D, reason="optional bm3d package not installed")
def test_bm3d_improves_psnr():
    clean = _smooth_image(32)
    noisy = clean + np.random.default_rng(7).normal(0, 0.3, clean.shape).astype(np.float32)
    out = baselines.run_baseline("bm3d", noisy)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert _psnr(out, clean) > _psnr(noisy, clean) + 3
    with pytest.raises(ValueError, match="2D"):
        baselines.bm3d(np.zeros((4, 8, 8, 1), dtype=np.float32))
