"""Tests of the noise characterisation against hand-computed spectra and autocorrelations."""

import numpy as np
import pytest
from scipy import ndimage

from n2s_tf import noise


def filtered(shape, kernel, axes, seed=0):
    """White noise of unit variance filtered (circularly) by a 1D kernel along `axes`."""
    x = np.random.default_rng(seed).normal(size=shape)
    for axis in axes:
        x = ndimage.convolve1d(x, kernel, axis=axis, mode="wrap")
    return x


def kernel_acf(kernel, lag):
    """Autocorrelation of a filter's output for white input, by hand: sum h[i] h[i+lag] / sum h^2."""
    kernel = np.asarray(kernel, float)
    return float(np.sum(kernel[:len(kernel) - lag] * kernel[lag:]) / np.sum(kernel**2))


def test_white_noise_has_flat_spectrum_and_no_correlation():
    x = np.random.default_rng(0).normal(0, 2.0, (512, 512))
    report = noise.noise_report(x)
    assert report["verdict"] == "white"
    assert report["lag1"] < 0.03
    assert report["spectrum"].mean() == pytest.approx(4.0, rel=0.05)  # the variance
    freqs, power = report["radial"]
    assert np.allclose(power[1:], 4.0, rtol=0.15)
    assert report["power_ratio"] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("kernel", [[0.4, 1.0, 0.4], [1.0, 1.0], [0.2, 0.5, 1.0, 0.5, 0.2]])
def test_filtered_noise_gives_the_kernels_autocorrelation(kernel):
    x = filtered((512, 512), kernel, axes=(0, 1))
    lags = noise.noise_report(x, low_cut=0)["lags"]
    for axis in (0, 1):
        expected = [kernel_acf(kernel, k) if k < len(kernel) else 0.0 for k in noise.LAGS]
        assert np.allclose(lags[axis], expected, atol=0.03), (axis, lags[axis], expected)


def test_default_low_cut_stays_close_and_axes_are_told_apart():
    kernel = [0.4, 1.0, 0.4]  # lag 1: 0.8 / 1.32 = 0.606
    x = filtered((512, 512), kernel, axes=(1,))  # along X only
    report = noise.noise_report(x)
    assert report["verdict"] == "correlated"
    assert report["lags"][1][0] == pytest.approx(kernel_acf(kernel, 1), abs=0.05)
    assert abs(report["lags"][0][0]) < 0.05


def test_sparse_smooth_signal_does_not_make_white_noise_correlated():
    """Blobs far stronger than the noise at low frequency, on a few tiles: still white."""
    rng = np.random.default_rng(1)
    signal = np.zeros((512, 512))
    signal[rng.integers(0, 512, 12), rng.integers(0, 512, 12)] = 4000.0
    signal = ndimage.gaussian_filter(signal, 6)
    x = signal + rng.normal(size=signal.shape)
    raw = x - x.mean()
    raw_lag1 = (raw[:, 1:] * raw[:, :-1]).mean() / raw.var()
    assert raw_lag1 > 0.3  # the plain image autocorrelation would call it correlated
    report = noise.noise_report(x)
    assert report["verdict"] == "white" and report["lag1"] < 0.05


def test_a_photographs_edges_do_not_make_its_white_noise_correlated():
    """Edges and textures put power between LOW_CUT and VERDICT_CUT, which the lags of the
    whole spectrum read as correlated noise; the verdict reads the spectrum above VERDICT_CUT."""
    import skimage.data

    clean = skimage.data.camera()[128:384, 128:384].astype(np.float64)
    x = clean + np.random.default_rng(7).normal(0, 15, clean.shape)
    report = noise.noise_report(x)
    assert report["lag1"] > 0.15  # the whole spectrum's estimate
    assert report["verdict_lag1"] < 0.1 and report["verdict"] == "white"


@pytest.mark.parametrize("lag1", [0.3, 0.6])
def test_filtered_noise_under_a_signal_is_correlated(lag1):
    """Filtered noise of lag 1 0.3 or 0.6 under smooth blobs: the verdict's lag 1 is most of it."""
    from n2s_tf import synthetic

    rng = np.random.default_rng(2)
    signal = np.zeros((512, 512))
    signal[rng.integers(0, 512, 40), rng.integers(0, 512, 40)] = 300.0
    x = ndimage.gaussian_filter(signal, 4) + synthetic.correlated_noise(signal.shape, lag1, rng=3)
    report = noise.noise_report(x)
    assert report["verdict"] == "correlated"
    assert 0.7 * lag1 < report["verdict_lag1"] < lag1 < report["lag1"] + 0.05


def test_noise_level_ratio_of_gaussian_and_counting_noise():
    rng = np.random.default_rng(4)
    assert noise.noise_level_ratio(rng.normal(size=(512, 512))) < 1.15
    assert noise.noise_level_ratio(rng.normal(size=(48, 64, 64)), 3) < 1.15
    # Counting noise on a ramp from 10 to 100 counts: variance = mean, so the ratio is the mean
    # of the brightest tenth of the pixels over the darkest's, (95.5) / (14.5) by hand.
    ramp = np.tile(np.linspace(10, 100, 512), (512, 1))
    assert noise.noise_level_ratio(rng.poisson(ramp).astype(float)) == pytest.approx(95.5 / 14.5, rel=0.15)
    dark = np.zeros((256, 256))
    dark[:, 128:] = rng.poisson(50, (256, 128))
    assert noise.noise_level_ratio(dark) == np.inf  # a background with no noise at all
    assert noise.noise_level_ratio(np.ones((64, 64))) == 1.0
    assert noise.homoscedastic(rng.normal(size=(256, 256, 2)), 2)
    assert not noise.homoscedastic(np.stack([rng.normal(size=(256, 256)), dark], -1), 2)


def test_volume_and_stack():
    kernel = [1.0, 1.0]  # lag 1: 0.5
    volume = filtered((64, 96, 96), kernel, axes=(0,))
    lags = noise.noise_report(volume, low_cut=0)["lags"]
    assert set(lags) == {0, 1, 2}
    assert lags[0][0] == pytest.approx(0.5, abs=0.05)
    assert abs(lags[1][0]) < 0.05 and abs(lags[2][0]) < 0.05
    # The same array as a stack of 64 planes: correlated along Z does not show in a plane.
    stack = noise.noise_report(volume, ndim=2, low_cut=0)
    assert set(stack["lags"]) == {0, 1} and stack["verdict"] == "white"
    assert noise.noise_spectrum(volume).shape == (32, 32, 32)


def test_small_images_shrink_the_tile_and_tiny_ones_are_refused():
    assert noise.noise_spectrum(np.zeros((20, 40)) + np.arange(40)).shape == (20, 20)
    with pytest.raises(ValueError, match="too small"):
        noise.noise_spectrum(np.zeros((4, 40)))
    with pytest.raises(ValueError, match="spatial axes"):
        noise.noise_spectrum(np.zeros(40))


def test_summary_line():
    x = filtered((256, 256), [0.4, 1.0, 0.4], axes=(0, 1))
    report = noise.noise_report(x)
    line = noise.summary_line(report)
    assert line.startswith("noise correlated: autocorrelation at lags 1/2/3 y 0.")
    assert " x 0." in line and "cycles/px" in line
    assert line.endswith(f"; lag 1 above {noise.VERDICT_CUT} cycles/px {report['verdict_lag1']:.2f}")


def test_small_images_get_no_verdict():
    x = filtered((100, 100), [0.4, 1.0, 0.4], axes=(0, 1))  # correlated, but under MIN_VERDICT_PIXELS
    report = noise.noise_report(x)
    assert report["lag1"] > 0.4 and report["verdict"] == "unknown"


def test_recorrupted_halves_have_independent_noise_of_twice_the_variance():
    rng = np.random.default_rng(0)
    signal = np.sin(np.arange(200_000) / 50.0).astype(np.float32)
    n = 0.5 * rng.standard_normal(signal.shape)
    a, b = noise.recorrupted_pair(signal + n, 0.5, rng=1)
    na, nb = a - signal, b - signal
    # By hand: var(n + s z) = var(n - s z) = 2 s^2 = 0.5; cov = var(n) - s^2 = 0.
    assert abs(na.var() - 0.5) < 0.01 and abs(nb.var() - 0.5) < 0.01
    assert abs(np.mean(na * nb)) < 0.005
    assert np.allclose((a + b) / 2, signal + n, atol=1e-6)  # the pair averages back to the image
    assert a.dtype == np.float32


def test_white_noise_level_reads_the_std_under_a_texture():
    rng = np.random.default_rng(3)
    assert noise.white_noise_level(noise.tile_spectrum(rng.normal(0, 7.0, (256, 256)))) == pytest.approx(7.0, rel=0.05)
    # A strong fine grating puts its power in a few bins: the median over the high ones ignores it.
    yy, xx = np.mgrid[:256, :256]
    grating = 80.0 * np.sin(2 * np.pi * (0.31 * xx + 0.12 * yy))
    textured = grating + rng.normal(0, 7.0, (256, 256))
    assert noise.white_noise_level(noise.tile_spectrum(textured)) == pytest.approx(7.0, rel=0.1)
    # A noise report's spectrum is the same above its low cut.
    assert noise.white_noise_level(noise.noise_report(textured)["spectrum"]) == noise.white_noise_level(
        noise.tile_spectrum(textured))
