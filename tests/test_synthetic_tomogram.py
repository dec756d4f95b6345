"""The tomogram simulator: even/odd halves, the missing wedge, correlated noise."""

import numpy as np
import pytest

from n2s_tf.synthetic_tomogram import density_volume, dose_symmetric_order, simulate_tomogram


@pytest.fixture(scope="module")
def tomogram():
    rng = np.random.default_rng(0)
    atoms = (rng.normal(0, 6, (300, 3)), np.full(300, 6))
    return simulate_tomogram([atoms], shape=(24, 48, 48), pixel_size=8, n_particles=4, seed=1, total_dose=60)


def test_dose_symmetric_order_starts_at_zero_and_alternates():
    tilts = np.array([-6, -3, 0, 3, 6])
    assert list(tilts[dose_symmetric_order(tilts)]) == [0, 3, -3, 6, -6]


def test_density_conserves_the_atomic_numbers():
    atoms = (np.array([[0.0, 0, 0], [10.0, 0, 0]]), np.array([6, 8]))
    box = density_volume(atoms, pixel_size=2.0, rng=0)
    assert box.sum() == pytest.approx(14, rel=1e-3)


def test_halves_are_independent_and_average_to_the_full_reconstruction(tomogram):
    clean, noisy, even, odd = (tomogram[k] for k in ("clean", "noisy", "even", "odd"))
    assert all(v.shape == (24, 48, 48) and v.dtype == np.float32 for v in (clean, noisy, even, odd))
    # Back-projection is linear, so the two halves' mean is the whole dose's reconstruction.
    np.testing.assert_allclose((even + odd) / 2, noisy, atol=1e-5)
    assert abs(np.corrcoef((even - clean).ravel(), (odd - clean).ravel())[0, 1]) < 0.1
    assert 0.05 < clean.var() / (noisy - clean).var() < 50


def test_reconstruction_noise_is_correlated_along_the_beam(tomogram):
    noise = tomogram["noisy"] - tomogram["clean"]
    noise = noise - noise.mean()
    lag1_z = (noise * np.roll(noise, 1, axis=0)).mean() / noise.var()
    assert lag1_z > 0.2  # the missing wedge smears it along Z


def test_missing_wedge_is_empty_in_the_reference(tomogram):
    """Beyond the largest tilt (60 degrees) the XZ Fourier plane of the noiseless
    reconstruction holds little power: it has the data's missing wedge."""
    spectrum = np.abs(np.fft.fft2(tomogram["clean"], axes=(0, 2))) ** 2
    kz = np.fft.fftfreq(24)[:, None, None]
    kx = np.fft.fftfreq(48)[None, None, :]
    angle = np.degrees(np.arctan2(np.abs(kz), np.abs(kx)))  # 90 = along Z
    radius = np.hypot(kz, kx)
    ring = (radius > 0.1) & (radius < 0.4)
    wedge = ring & (angle > 75)
    seen = ring & (angle < 45)
    assert spectrum[np.broadcast_to(wedge, spectrum.shape)].mean() < 0.2 * spectrum[
        np.broadcast_to(seen, spectrum.shape)].mean()
