"""Classical denoisers, the yardstick for the learned ones.

Every baseline is ``f(image, **params) -> denoised`` on a channels-last float32 image
(H, W, C) or volume (D, H, W, C); each channel is filtered on its own over the spatial
axes. ``run_baseline`` picks one by name. Numpy/scipy/scikit-image only; BM3D needs the
optional ``bm3d`` package.
"""

import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_nl_means


def _check(image):
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (3, 4):
        raise ValueError(
            f"expected a (H, W, C) image or (D, H, W, C) volume, got shape {image.shape}")
    return image


def _per_channel(image, denoise):
    """Apply ``denoise`` to each channel (a spatial array) and stack the results."""
    image = _check(image)
    channels = [denoise(image[..., c]) for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1).astype(np.float32)


def estimate_noise_sigma(channel):
    """Std of white Gaussian noise in one channel (an array of spatial axes only).

    Donoho's robust estimator, as in skimage.restoration.estimate_sigma but without
    PyWavelets: the median absolute finest-scale diagonal Haar coefficient / 0.6745.
    """
    detail = np.asarray(channel, dtype=np.float64)
    for axis in range(detail.ndim):
        even = np.take(detail, np.arange(0, detail.shape[axis] - 1, 2), axis=axis)
        odd = np.take(detail, np.arange(1, detail.shape[axis], 2), axis=axis)
        detail = (even - odd) / np.sqrt(2)
    return float(np.median(np.abs(detail)) / 0.6745)


def gaussian(image, sigma=2.0):
    """Gaussian blur of ``sigma`` pixels along every spatial axis."""
    image = _check(image)
    return ndimage.gaussian_filter(image, (sigma,) * (image.ndim - 1) + (0,)).astype(np.float32)


def median(image, size=3):
    """Median over a ``size``-wide square (cube in 3D) window."""
    image = _check(image)
    return ndimage.median_filter(image, (size,) * (image.ndim - 1) + (1,)).astype(np.float32)


def fourier_lowpass(image, cutoff=0.1):
    """Keep the frequencies with |f| <= ``cutoff`` cycles/pixel (a hard circle or sphere).

    cutoff 0.5 keeps the disc inscribed in the Nyquist square; a tiny cutoff keeps only
    the mean.
    """
    if cutoff < 0:
        raise ValueError(f"cutoff must be >= 0 cycles/pixel, got {cutoff}")
    image = _check(image)
    axes = tuple(range(image.ndim - 1))
    freqs = np.meshgrid(*(np.fft.fftfreq(image.shape[a]) for a in axes), indexing="ij")
    keep = np.sqrt(sum(f**2 for f in freqs)) <= cutoff
    spectrum = np.fft.fftn(image, axes=axes) * keep[..., None]
    return np.fft.ifftn(spectrum, axes=axes).real.astype(np.float32)


def nlm(image, sigma=None, patch_size=5, patch_distance=6, h=None):
    """Non-local means (scikit-image, fast mode).

    ``sigma`` (noise std) is estimated per channel when None; ``h`` defaults to
    0.8 * sigma, as the scikit-image documentation recommends.
    """
    def denoise(channel):
        s = estimate_noise_sigma(channel) if sigma is None else sigma
        return denoise_nl_means(channel, patch_size=patch_size, patch_distance=patch_distance,
                                h=0.8 * s if h is None else h, sigma=s, fast_mode=True)
    return _per_channel(image, denoise)


def bm3d(image, sigma=None):
    """BM3D of 2D images (optional ``bm3d`` package); ``sigma`` estimated per channel if None."""
    try:
        import bm3d as bm3d_package
    except ImportError:
        raise ImportError(
            "the bm3d baseline needs the bm3d package: pip install n2s_tf[bm3d]") from None
    if _check(image).ndim != 3:
        raise ValueError("bm3d works on 2D images (H, W, C) only")

    def denoise(channel):
        s = estimate_noise_sigma(channel) if sigma is None else sigma
        return bm3d_package.bm3d(channel, sigma_psd=s)
    return _per_channel(image, denoise)


BASELINES = {
    "gaussian": gaussian,
    "median": median,
    "fourier_lowpass": fourier_lowpass,
    "nlm": nlm,
    "bm3d": bm3d,
}


def run_baseline(name, image, **params):
    """Run the baseline called ``name`` (a key of BASELINES) on ``image``."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name](image, **params)
