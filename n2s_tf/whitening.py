"""Whitening and re-colouring: let a white-noise denoiser work on correlated noise.

A blind-spot network passes noise that a pixel's neighbours predict. Dividing the image's
Fourier transform by the amplitude of its own noise spectrum (n2s_tf.noise) makes the noise
white, the unchanged network denoises that, and multiplying back re-colours the result. The
filter is global (one spectrum for the whole image), so it is applied to the whole image
before tiling and undone on the whole output after it: tiled prediction stays equal to
whole-image prediction.

The tile spectrum's autocorrelation (short: a few pixels for detector noise) is tapered and
embedded in the image's grid, whose FFT gives the spectrum at the image's own frequencies
without interpolation. Where the spectrum is near zero (beyond a Fourier crop) the filter
would amplify nothing but round-off: the power is floored at FLOOR times its mean there.
"""

import numpy as np
import scipy.fft

from n2s_tf import noise

FLOOR = 0.05  # relative to the mean power; bounds the filter's gain at sqrt(1 / FLOOR)


def embed_spectrum(spectrum, shape):
    """The tile-grid noise spectrum carried to the rfftn grid of `shape` (float64, >= 0).

    The autocovariance at lags below tile/2 (Hann-tapered) is placed at the same lags of a
    zero grid of `shape`, and its real FFT taken.
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    tile = spectrum.shape[0]
    acov = np.fft.ifftn(spectrum).real
    half = tile // 2
    lags = np.arange(-half + 1, half)
    taper = np.cos(np.pi * lags / (2 * half)) ** 2
    full = np.zeros(shape)
    for index in np.ndindex(*(len(lags),) * spectrum.ndim):
        lag = tuple(int(lags[i]) for i in index)
        if any(abs(k) * 2 > n for k, n in zip(lag, shape)):
            continue  # a lag longer than half the image would wrap onto another one
        weight = np.prod([taper[i] for i in index])
        full[tuple(k % n for k, n in zip(lag, shape))] = acov[tuple(k % tile for k in lag)] * weight
    return np.maximum(scipy.fft.rfftn(full).real, 0.0)


def whitening_filter(spectrum, shape, floor=FLOOR):
    """Real gain on the rfftn grid of `shape`: sqrt(mean power / max(power, floor * mean power)).

    1 everywhere for white noise; the image times it (in Fourier space) has noise of about
    the same variance, white where the power is above the floor.
    """
    power = embed_spectrum(spectrum, shape)
    mean = power.mean()
    return np.sqrt(mean / np.maximum(power, floor * mean)).astype(np.float32)


def apply_filter(image, gain, inverse=False):
    """image (spatial axes only) filtered by `gain` (rfftn grid), or by 1 / gain; float32."""
    image = np.asarray(image, dtype=np.float32)
    spectrum = scipy.fft.rfftn(image)
    spectrum *= (1.0 / gain) if inverse else gain
    return scipy.fft.irfftn(spectrum, s=image.shape).astype(np.float32)


def denoise_whitened(denoise, image, ndim, spectra=None, **spectrum_options):
    """denoise(whitened image) re-coloured; image is (*spatial, C) with `ndim` spatial axes.

    Each channel gets the filter of its own noise spectrum (`spectra`: one per channel, else
    estimated by n2s_tf.noise.noise_spectrum with `spectrum_options`). `denoise` maps a
    (*spatial, C) array to one of the same shape (the tiled prediction).
    """
    image = np.asarray(image, dtype=np.float32)
    channels = image.shape[-1]
    if spectra is None:
        spectra = [noise.noise_spectrum(image[..., c], ndim, **spectrum_options) for c in range(channels)]
    gains = [whitening_filter(s, image.shape[:-1]) for s in spectra]
    whitened = np.stack([apply_filter(image[..., c], g) for c, g in enumerate(gains)], axis=-1)
    output = np.asarray(denoise(whitened), dtype=np.float32)
    return np.stack([apply_filter(output[..., c], g, inverse=True) for c, g in enumerate(gains)], axis=-1)
