"""recorrupted_pair: the two noises are uncorrelated and each has twice the variance."""
import numpy as np

from n2s_tf import noise


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
