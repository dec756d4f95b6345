"""Tests of n2s_tf.metrics against hand-computed values and known statistical answers."""

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from n2s_tf import metrics


def rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- pixel metrics


def test_mse_and_psnr_known_values():
    ref = np.linspace(0.0, 1.0, 100).reshape(10, 10)  # range 1
    signs = np.where(np.arange(100).reshape(10, 10) % 3 == 0, 1.0, -1.0)
    noisy = ref + 0.1 * signs  # every error is +-0.1: mse 0.01
    assert metrics.mse(ref, noisy) == pytest.approx(0.01)
    assert metrics.psnr(ref, noisy) == pytest.approx(20.0)
    assert metrics.psnr(ref, noisy, data_range=255.0) == pytest.approx(10 * math.log10(255.0**2 / 0.01))
    assert metrics.psnr(ref, ref) == math.inf
    with pytest.raises(ValueError, match="same shape"):
        metrics.mse(ref, ref[:5])


def test_pearson_cc():
    a = rng().normal(size=(32, 32))
    assert metrics.pearson_cc(a, 2 * a + 3) == pytest.approx(1.0)
    assert metrics.pearson_cc(a, -a) == pytest.approx(-1.0)
    b = np.array([1.0, 2.0, 3.0, 4.0])
    c = np.array([1.0, 3.0, 2.0, 4.0])
    assert metrics.pearson_cc(b, c) == pytest.approx(0.8)  # cov 1 / (var 1.25)


def test_ssim_identity_channels_and_volumes():
    generator = rng(1)
    image = generator.random((32, 32, 3))
    other = image + 0.1 * generator.normal(size=image.shape)
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    per_channel = [structural_similarity(image[..., c], other[..., c], data_range=np.ptp(image)) for c in range(3)]
    assert metrics.ssim(image, other) == pytest.approx(np.mean(per_channel))
    volume = generator.random((12, 16, 16))
    noisy = volume + 0.1 * generator.normal(size=volume.shape)
    expected = structural_similarity(volume, noisy, data_range=np.ptp(volume))
    assert metrics.ssim(volume[..., None], noisy[..., None]) == pytest.approx(expected)
    assert metrics.ssim(volume, noisy, channels_last=False) == pytest.approx(expected)
    assert 0.0 < expected < 1.0


# ----------------------------------------------------------------------------- Fourier correlation


def full_spectrum_frc(a, b):
    """Reference FRC from the full (not half) spectrum, ring by ring."""
    n = min(a.shape)
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    grids = np.meshgrid(*[np.fft.fftfreq(size) for size in a.shape], indexing="ij")
    ring = np.floor(np.sqrt(sum(g**2 for g in grids)) * n + 0.5).astype(int)
    curve, counts = [], []
    for k in range(n // 2 + 1):
        sel = ring == k
        power = np.sum(np.abs(fa[sel]) ** 2) * np.sum(np.abs(fb[sel]) ** 2)
        curve.append(np.sum(fa[sel] * np.conj(fb[sel])).real / np.sqrt(power))
        counts.append(int(sel.sum()))
    return np.array(curve), np.array(counts)


@pytest.mark.parametrize("shape", [(64, 64), (48, 64), (48, 63), (9, 10, 12)])
def test_fourier_correlation_matches_full_spectrum(shape):
    generator = rng(2)
    a = generator.normal(size=shape)
    b = a + generator.normal(size=shape)
    freq, curve, counts = metrics.fourier_correlation(a, b)
    expected_curve, expected_counts = full_spectrum_frc(a, b)
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_allclose(curve, expected_curve, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(freq, np.arange(min(shape) // 2 + 1) / min(shape))


def test_ring_count_and_frequencies_for_64():
    a = rng().normal(size=(64, 64))
    freq, curve, counts = metrics.fourier_ring_correlation(a, a)
    assert len(freq) == len(curve) == len(counts) == 33
    assert freq[0] == 0.0 and freq[-1] == 0.5 and freq[1] == 1 / 64
    # ring 1: (+-1, 0), (0, +-1) and the four (+-1, +-1) at radius 1.41 -> 8 pixels
    assert counts[0] == 1 and counts[1] == 8


def test_frc_of_image_with_itself_is_one():
    a = rng().normal(size=(40, 40, 1)) + 5.0
    _, curve, _ = metrics.fourier_ring_correlation(a, a)
    np.testing.assert_allclose(curve, 1.0, rtol=1e-12)


def test_frc_of_independent_noise_is_near_zero():
    generator = rng(3)
    _, curve, counts = metrics.fourier_ring_correlation(generator.normal(size=(256, 256)),
                                                        generator.normal(size=(256, 256)))
    assert abs(np.mean(curve[1:])) < 0.05
    # each ring is within 4 standard errors (about 1 / sqrt(count / 2)) of zero
    assert np.all(np.abs(curve[5:]) < 4 / np.sqrt(counts[5:] / 2))


@pytest.mark.parametrize("snr", [1.0, 0.25])
def test_frc_of_two_noisy_copies_is_snr_over_one_plus_snr(snr):
    generator = rng(4)
    signal = generator.normal(size=(256, 256))  # white, variance 1
    sigma = 1 / math.sqrt(snr)
    a = signal + sigma * generator.normal(size=signal.shape)
    b = signal + sigma * generator.normal(size=signal.shape)
    _, curve, counts = metrics.fourier_ring_correlation(a, b)
    expected = snr / (1 + snr)
    assert np.mean(curve[1:]) == pytest.approx(expected, abs=0.02)
    # every ring within 4 standard errors, (1 - rho^2) / sqrt(count / 2), of rho
    assert np.all(np.abs(curve[5:] - expected) < 4 * (1 - expected**2) / np.sqrt(counts[5:] / 2))
    assert metrics.mean_frc(a, b) == pytest.approx(np.mean(curve[1:]))


def test_fsc_on_volumes():
    generator = rng(5)
    signal = generator.normal(size=(32, 32, 32))
    a = signal + generator.normal(size=signal.shape)
    b = signal + generator.normal(size=signal.shape)
    freq, curve, counts = metrics.fourier_shell_correlation(a[..., None], b[..., None])
    assert len(freq) == 17 and freq[-1] == 0.5
    assert counts[1] == 18  # 6 face and 12 edge neighbours; the corners (radius 1.73) round to 2
    assert np.mean(curve[1:]) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="3D"):
        metrics.fourier_shell_correlation(a[0], b[0])
    with pytest.raises(ValueError, match="2D"):
        metrics.fourier_ring_correlation(a, b)


# ----------------------------------------------------------------------------- thresholds, resolution


def test_half_bit_threshold_known_values():
    assert metrics.half_bit_threshold(1) == pytest.approx(1.0)  # 2.1173 / 2.1173
    # n = 100: (0.2071 + 0.19102) / (1.2071 + 0.09102) = 0.39812 / 1.29812
    assert metrics.half_bit_threshold(100) == pytest.approx(0.39812 / 1.29812)
    assert metrics.half_bit_threshold(1e12) == pytest.approx(0.2071 / 1.2071, abs=1e-5)  # 0.1716
    np.testing.assert_allclose(metrics.half_bit_threshold([1, 100]), [1.0, 0.39812 / 1.29812])
    assert metrics.FSC_0143 == 0.143


def test_resolution_at_linear_curve():
    freq = np.arange(33) / 64
    curve = 1 - 2 * freq
    # 1 - 2f = 0.143 at f = 0.4285 cycles/pixel; at 1.5 A/pixel that is 1.5 / 0.4285 A
    assert metrics.resolution_at(freq, curve, metrics.FSC_0143) == pytest.approx(0.4285)
    assert metrics.resolution_at(freq, curve, 0.143, pixel_size=1.5) == pytest.approx(1.5 / 0.4285)
    # threshold per ring 0.2 + 0.4 f meets 1 - 2 f at f = 1/3, between rings 21 and 22
    assert metrics.resolution_at(freq, curve, 0.2 + 0.4 * freq) == pytest.approx(1 / 3)
    assert metrics.resolution_at(freq, curve, -0.5) is None
    assert metrics.resolution_at(freq, curve, -0.5, pixel_size=1.0) is None


def test_resolution_at_interpolates_between_rings_and_skips_ring_zero():
    freq = np.array([0.0, 0.1, 0.2, 0.3])
    curve = np.array([np.nan, 0.9, 0.5, 0.1])
    # crossing 0.3 between (0.2, 0.5) and (0.3, 0.1): 0.2 + 0.1 * 0.2 / 0.4 = 0.25
    assert metrics.resolution_at(freq, curve, 0.3) == pytest.approx(0.25)
    assert metrics.resolution_at(freq, curve, 0.95) == pytest.approx(0.1)  # already below at ring 1


def test_snr_from_two_copies():
    generator = rng(6)
    signal = generator.normal(size=(1000, 1000))
    noise_sigma = math.sqrt(10.0)  # SNR = 1 / 10
    a = signal + noise_sigma * generator.normal(size=signal.shape)
    b = signal + noise_sigma * generator.normal(size=signal.shape)
    assert metrics.snr_from_two_copies(a, b) == pytest.approx(0.1, rel=0.1)


def test_soft_edge_window_by_hand():
    w = metrics.soft_edge((16, 8), fraction=0.25)  # 4 and 2 px raised cosines
    edge4 = 0.5 - 0.5 * np.cos(np.pi * (np.arange(4) + 0.5) / 4)
    np.testing.assert_allclose(w[:4, 4], edge4)
    np.testing.assert_allclose(w[-4:, 4], edge4[::-1])
    np.testing.assert_allclose(w[8, :2], [0.5 - 0.5 * np.cos(np.pi * 0.25), 0.5 - 0.5 * np.cos(np.pi * 0.75)])
    assert w[4:12, 2:6].min() == 1.0


def test_soft_edge_keeps_most_of_the_faces_jump_out_of_the_frc():
    # A smooth, non-periodic signal in white noise: a linear low-pass adds no information in the
    # high rings, yet without the soft edge the faces' jump it keeps raises its FRC there a lot.
    # (The window's own leakage is left: an output far smoother than this still gains some.)
    from scipy import ndimage

    rng = np.random.default_rng(0)
    clean = np.cumsum(ndimage.gaussian_filter(rng.normal(size=(128, 128)), 3), axis=0)
    clean /= clean.std()
    noisy = clean + rng.normal(0, 1.0, clean.shape)
    smooth = ndimage.gaussian_filter(noisy, 1.0)
    high = slice(30, 65)
    plain = [metrics.fourier_ring_correlation(clean, v)[1][high].mean() for v in (noisy, smooth)]
    w = metrics.soft_edge(clean.shape)
    soft = [metrics.fourier_ring_correlation(clean * w, v * w)[1][high].mean() for v in (noisy, smooth)]
    assert plain[1] > plain[0] + 0.3  # the artefact
    assert soft[1] < soft[0] + 0.1
