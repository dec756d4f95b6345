"""Fourier ring calibration: the ring sums against a full-spectrum loop, and that it lowers the
error of a blind-spot predictor on white noise, where its assumptions hold."""

from math import erfc

import numpy as np
from scipy import ndimage

from n2s_tf import calibration
from n2s_tf.metrics import fourier_rings


def test_ring_weights_count_every_pixel_once():
    for shape in [(8, 6), (7, 9), (4, 6, 5)]:
        ring, weight = fourier_rings(shape)
        assert weight.sum() == np.prod(shape)  # rfftn's half-spectrum stands for the whole one
        assert ring.min() == 0


def test_white_noise_power_is_the_noise_variance():
    noise = np.random.default_rng(0).normal(0, 2.0, (128, 128))
    assert abs(calibration.white_noise_power(noise) - 4.0) < 0.4


def test_nonnegative_mean_of_a_truncated_normal():
    # Hand values: N(mu, 1) truncated at 0 has mean mu + phi(mu) / Phi(mu).
    got = calibration.nonnegative_mean(np.array([0.0, -1.0, 3.0, -40.0]), 1.0)
    np.testing.assert_allclose(got[:3], [0.7978846, 0.5251353, 3.0044378], rtol=1e-6)
    assert 0.02 < got[3] < 0.03  # far below 0: about 1 / 40, no overflow


def full_spectrum_weights(y, f, f_probe, delta, eps, sigma2):
    """The same weights from np.fft.fftn's whole spectrum, ring by ring in a loop."""
    n = min(y.shape)
    fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    ring = np.floor(np.hypot(fy, fx) * n + 0.5).astype(int)
    Y, F = np.fft.fftn(y, norm="ortho"), np.fft.fftn(f, norm="ortho")
    dF = (np.fft.fftn(f_probe, norm="ortho") - F) / eps
    D = np.fft.fftn(delta, norm="ortho")
    a, b = np.ones(ring.max() + 1), np.zeros(ring.max() + 1)
    below = 0
    for k in range(1, ring.max() + 1):
        m = ring == k
        p_ff, p_yy = np.mean(np.abs(F[m]) ** 2), np.mean(np.abs(Y[m]) ** 2)
        p_yf = np.mean((Y[m] * F[m].conj()).real)
        s_f = p_yf - sigma2 * np.mean((D[m] * dF[m].conj()).real)
        # E|S|^2 >= 0, from p_yy - sigma2 with error p_yy / sqrt(rfftn's coefficients in the ring)
        error = p_yy / np.sqrt(np.sum(m[:, : y.shape[1] // 2 + 1]))
        z = (p_yy - sigma2) / error
        s_y = p_yy - sigma2 + error * np.exp(-z**2 / 2) / np.sqrt(2 * np.pi) / (0.5 * erfc(-z / np.sqrt(2)))
        below += p_yy < sigma2
        r = calibration.RIDGE
        a[k], b[k] = np.linalg.solve([[p_ff * (1 + r), p_yf], [p_yf, p_yy * (1 + r)]], [s_f + r * p_ff, s_y])
    return a, b, below


def test_ring_weights_match_a_full_spectrum_loop():
    rng = np.random.default_rng(1)
    y, f, f_probe, delta = rng.normal(size=(4, 10, 7))
    a, b = calibration.ring_weights(y, f, f_probe, delta, eps=0.3, sigma2=0.7, smooth=0)
    want_a, want_b, below = full_spectrum_weights(y, f, f_probe, delta, eps=0.3, sigma2=0.7)
    assert below > 0  # rings whose power is under sigma^2 are among those checked
    np.testing.assert_allclose(a, want_a, rtol=1e-9)
    np.testing.assert_allclose(b, want_b, rtol=1e-9)


def neighbour_mean(x):
    """A blind-spot predictor: each pixel from its 4 neighbours, never from itself."""
    x = x[..., 0]
    mean = (np.roll(x, 1, 0) + np.roll(x, -1, 0) + np.roll(x, 1, 1) + np.roll(x, -1, 1)) / 4
    return mean[..., None]


def test_calibration_lowers_the_error_of_a_blind_spot_predictor():
    rng = np.random.default_rng(2)
    clean = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 2.0, mode="wrap")
    clean /= clean.std()
    noisy = clean + rng.normal(0, 0.7, clean.shape)
    scale = noisy.std()
    y = (noisy / scale)[..., None]
    plain = neighbour_mean(y)[..., 0] * scale
    calibrated = calibration.calibrate(neighbour_mean, y)[..., 0] * scale

    def mse(x):
        return np.mean((x - clean) ** 2)

    assert mse(plain) < mse(noisy)
    assert mse(calibrated) < 0.6 * mse(plain)
    np.testing.assert_array_equal(calibration.calibrate(neighbour_mean, y)[..., 0] * scale, calibrated)


def test_calibration_of_each_channel_and_of_volumes():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(6, 16, 16, 2)).astype(np.float32)

    def predict(x):
        return ndimage.uniform_filter(x, size=(3, 3, 3, 1), mode="wrap")

    out = calibration.calibrate(predict, image)
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out, predict(image), atol=1e-3)  # the shells were re-weighted


def _correlated_halves():
    """A clean image, two halves with correlated noise (white noise blurred, independent
    between the halves) and a denoiser's predictions of each."""
    rng = np.random.default_rng(4)
    clean = ndimage.gaussian_filter(rng.normal(size=(256, 256)), 1.5, mode="wrap")
    clean /= clean.std()
    halves = [clean + ndimage.gaussian_filter(rng.normal(0, 2.0, clean.shape), 0.8, mode="wrap") for _ in "ab"]
    return clean, halves, [neighbour_mean(h[..., None])[..., 0] for h in halves]


def test_halves_calibration_needs_no_noise_model():
    # The weights from the halves' cross products do almost as well as the oracle's (the same
    # normal equations with the clean image), and beat both the mean prediction and the mean half.
    clean, halves, predictions = _correlated_halves()
    ring, weight = fourier_rings(clean.shape)
    S, Y, F = (np.fft.rfftn(x, norm="ortho") for x in (clean, sum(halves) / 2, sum(predictions) / 2))

    def ring_mean(v):
        return np.bincount(ring.ravel(), (weight * v).ravel()) / np.bincount(ring.ravel(), weight.ravel())

    p_ff, p_yy, p_yf = ring_mean(abs(F) ** 2), ring_mean(abs(Y) ** 2), ring_mean((Y * F.conj()).real)
    s_f, s_y = ring_mean((S * F.conj()).real), ring_mean((S * Y.conj()).real)
    det = p_ff * p_yy - p_yf**2
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (s_f * p_yy - s_y * p_yf) / det, (p_ff * s_y - p_yf * s_f) / det
    a[0], b[0] = 1.0, 0.0  # the mean (and the empty corner rings beyond the last) as calibrate keeps it
    a[~np.isfinite(a)], b[~np.isfinite(b)] = 1.0, 0.0
    oracle = np.fft.irfftn(a[ring] * F + b[ring] * Y, s=clean.shape, axes=(0, 1), norm="ortho")
    out = calibration.calibrate_halves(*halves, *predictions)

    def mse(x):
        return np.mean((x - clean) ** 2)

    assert out.dtype == np.float32 and out.shape == clean.shape
    assert mse(out) < 1.1 * mse(oracle)
    assert mse(out) < min(mse(sum(halves) / 2), mse(sum(predictions) / 2))


def test_halves_calibration_in_blocks(monkeypatch):
    # The same image in blocks of 64 x 64 (cores of 32) instead of whole: the ring sums averaged
    # over the blocks and the mix block by block do as well as one whole-image fit and mix.
    clean, halves, predictions = _correlated_halves()
    whole = calibration.calibrate_halves(*halves, *predictions)
    monkeypatch.setattr(calibration, "BLOCK_PIXELS", 64 * 64)
    assert len(calibration._blocks(clean.shape, calibration.BLOCK_PIXELS, calibration.HALO)) == 64
    out = calibration.calibrate_halves(*halves, *predictions)
    assert out.dtype == np.float32 and out.shape == clean.shape

    def mse(x):
        return np.mean((x - clean) ** 2)

    assert mse(out) < 1.05 * mse(whole)
    assert mse(out) < min(mse(sum(halves) / 2), mse(sum(predictions) / 2))


def test_blocks_cover_every_pixel_once_and_read_their_halo():
    shape = (10, 7)
    blocks = calibration._blocks(shape, 16, 1)  # a side of 4: cores of about 2, a halo of 1
    assert [core for core, _ in blocks][:4] == [(slice(0, 2), s) for s in
                                               (slice(0, 2), slice(2, 4), slice(4, 5), slice(5, 7))]
    covered = np.zeros(shape, int)
    for core, indices in blocks:
        covered[core] += 1
        for c, index, n in zip(core, indices, shape):
            np.testing.assert_array_equal(index, np.arange(c.start - 1, c.stop + 1) % n)  # wrapped
    assert (covered == 1).all()
    (core, indices), = calibration._blocks((4, 4), 16, 1)  # one block, no halo
    assert core == (slice(0, 4), slice(0, 4)) and [list(i) for i in indices] == [[0, 1, 2, 3]] * 2


def test_combine_halves_per_channel_and_plain():
    from n2s_tf import api

    rng = np.random.default_rng(5)
    clean = ndimage.gaussian_filter(rng.normal(size=(64, 64, 2)), (2, 2, 0))
    a, b = (clean + rng.normal(0, 1, clean.shape) for _ in "ab")
    fa, fb = (ndimage.uniform_filter(x, (3, 3, 1)) for x in (a, b))
    out = api.combine_halves(a, b, fa.copy(), fb, ndim=2)
    for c in range(2):
        np.testing.assert_allclose(out[..., c], calibration.calibrate_halves(a[..., c], b[..., c], fa[..., c],
                                                                             fb[..., c]), atol=1e-6)
    plain = api.combine_halves(a, b, fa.copy(), fb, ndim=2, calibrate=False)
    np.testing.assert_allclose(plain, (fa + fb) / 2, atol=1e-6)


def test_tilt_sectors_by_hand():
    sector = calibration.tilt_sectors((8, 4, 8), 4)
    assert sector.shape == (8, 4, 5)
    assert sector[2, 0, 0] == 3  # along Z: |cos| 1
    assert sector[0, 3, 2] == 0  # in the XY plane: |cos| 0, whatever Y
    assert sector[1, 0, 1] == 2  # 45 degrees about Y: |cos| 0.707, bin 2 of 4
    assert sector[0, 0, 0] == 0  # the mean


def test_tilt_sectors_learn_a_missing_wedge_from_the_halves(monkeypatch):
    # Halves whose data lack a wedge about Y (as a tilt series to +-60 degrees does); a predictor
    # that fills the wedge with power of its own. Per-sector weights find from the halves alone
    # that the wedge holds no signal; one weight per shell cannot.
    rng = np.random.default_rng(6)
    shape = (32, 32, 32)
    kz, _, kx = np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), np.fft.rfftfreq(32), indexing="ij")
    wedge = np.abs(kz) > np.tan(np.radians(60)) * np.abs(kx)

    def measured(x):
        spectrum = np.fft.rfftn(x)
        spectrum[wedge] = 0
        return np.fft.irfftn(spectrum, s=shape, axes=(0, 1, 2))

    clean = measured(ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 5)
    halves = [clean + measured(rng.normal(0, 1, shape)) for _ in "ab"]
    def in_wedge(x):
        return x - measured(x)

    # Smooth, and with power of its own in the wedge.
    predictions = [ndimage.gaussian_filter(h, 1.0) + in_wedge(ndimage.gaussian_filter(rng.normal(0, 2, shape), 1.0))
                   for h in halves]

    def mse(x):
        return np.mean((x - clean) ** 2)

    one = calibration.calibrate_halves(*halves, *predictions, sectors=1)
    many = calibration.calibrate_halves(*halves, *predictions, sectors=8)
    assert mse(many) < 0.8 * mse(one)
    monkeypatch.setattr(calibration, "BLOCK_PIXELS", 24**3)  # in 8 blocks of 24^3, cores of 16^3
    monkeypatch.setattr(calibration, "HALO", 4)
    assert len(calibration._blocks(shape, 24**3, 4)) == 8
    assert mse(calibration.calibrate_halves(*halves, *predictions, sectors=8)) < 0.8 * mse(one)
