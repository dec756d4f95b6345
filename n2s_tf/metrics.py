"""Image quality metrics in numpy: MSE, PSNR, SSIM, correlation, and the Fourier
Ring / Shell Correlation with its resolution thresholds, as cryo-EM reports them.

All metrics compute in float64. For the Fourier correlations, arrays are spatial
((H, W) or (D, H, W)); a trailing channel axis of size 1 is dropped.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

FSC_0143 = 0.143  # Rosenthal & Henderson 2003, for FSC between independent half maps


def _pair(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"arrays must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _spatial(x):
    """x as float64 without a trailing channel axis of size 1."""
    x = np.asarray(x, np.float64)
    return x[..., 0] if x.ndim > 2 and x.shape[-1] == 1 else x


def mse(ref, x) -> float:
    """Mean squared error."""
    ref, x = _pair(ref, x)
    return float(np.mean((ref - x) ** 2))


def psnr(ref, x, data_range=None) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / mse); data_range
    defaults to ref.max() - ref.min(). Infinite for identical arrays."""
    ref, x = _pair(ref, x)
    if data_range is None:
        data_range = ref.max() - ref.min()
    error = mse(ref, x)
    return float(10 * np.log10(data_range**2 / error)) if error > 0 else float("inf")


def ssim(ref, x, data_range=None, channels_last: bool = True) -> float:
    """Structural similarity (scikit-image, 7-pixel window), averaged over channels.

    Arrays are channels-last, (H, W, C) or (D, H, W, C), as everywhere in n2s_tf; a 2D
    array is one gray image. Pass channels_last=False for a bare (D, H, W) volume.
    data_range defaults to ref.max() - ref.min().
    """
    ref, x = _pair(ref, x)
    if data_range is None:
        data_range = ref.max() - ref.min()
    channel_axis = -1 if channels_last and ref.ndim > 2 else None
    return float(structural_similarity(ref, x, data_range=data_range, channel_axis=channel_axis))


def pearson_cc(a, b) -> float:
    """Pearson correlation coefficient of all values."""
    a, b = _pair(a, b)
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def fourier_radius(shape):
    """The frequency radius (cycles/pixel) of every coefficient of `np.fft.rfftn` of a real
    array of `shape`."""
    axes = [np.fft.fftfreq(size) for size in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    return np.sqrt(sum(f**2 for f in np.meshgrid(*axes, indexing="ij", sparse=True)))


def fourier_rings(shape):
    """Ring (2D) or shell (3D) index and weight of every coefficient of `np.fft.rfftn` of a
    real array of `shape`.

    index = floor(|f| * N + 1/2), |f| the frequency radius in cycles/pixel and N the smallest
    side: 0 .. N // 2 up to Nyquist, larger in the corners beyond it. weight is 2 for a
    coefficient that also stands for its mirror image in the half-spectrum rfftn keeps, else 1.
    """
    ring = np.floor(fourier_radius(shape) * min(shape) + 0.5).astype(np.int64)
    return ring, np.broadcast_to(mirror_weights(shape[-1]), ring.shape)


def mirror_weights(last_side):
    """Per column of `np.fft.rfftn`'s last axis (of a real array whose last side is
    `last_side`): 2 where the coefficient also stands for its mirror image in the half-spectrum,
    else 1 (the zero-frequency column, and the Nyquist one for an even side)."""
    weight = np.full(last_side // 2 + 1, 2.0)
    weight[0] = 1.0
    if last_side % 2 == 0:
        weight[-1] = 1.0
    return weight


def fourier_correlation(a, b):
    """Fourier correlation of two real arrays in rings (2D) or shells (3D).

    Ring k holds the Fourier pixels whose frequency radius |f| (cycles/pixel, from
    numpy.fft.fftfreq on each axis) rounds to k: k = floor(|f| * N + 1/2), N the
    smallest side, for k = 0 .. N // 2 (Nyquist); corners beyond Nyquist are left out.
    FRC_k = Re sum(A conj(B)) / sqrt(sum |A|^2 sum |B|^2) over the ring.
    Returns (freq, curve, counts): freq = k / N in cycles/pixel, the correlation per
    ring (NaN where a ring has no power), and the number of Fourier pixels per ring
    (both halves of the spectrum, as the 1/2-bit threshold wants).
    """
    a, b = _pair(_spatial(a), _spatial(b))
    n = min(a.shape)
    spectrum_a, spectrum_b = np.fft.rfftn(a), np.fft.rfftn(b)
    ring, weight = fourier_rings(a.shape)
    inside = ring <= n // 2

    def ring_sum(values):
        return np.bincount(ring[inside], weights=(weight * values)[inside], minlength=n // 2 + 1)

    cross = ring_sum((spectrum_a * spectrum_b.conj()).real)
    power = ring_sum(np.abs(spectrum_a) ** 2) * ring_sum(np.abs(spectrum_b) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = cross / np.sqrt(power)
    counts = np.rint(ring_sum(np.ones(spectrum_a.shape))).astype(np.int64)
    return np.arange(n // 2 + 1) / n, curve, counts


def fourier_ring_correlation(a, b):
    """FRC of two 2D images ((H, W) or (H, W, 1)); see `fourier_correlation`."""
    a, b = _spatial(a), _spatial(b)
    if a.ndim != 2:
        raise ValueError(f"fourier_ring_correlation needs 2D images, got shape {a.shape}")
    return fourier_correlation(a, b)


def fourier_shell_correlation(a, b):
    """FSC of two volumes ((D, H, W) or (D, H, W, 1)); see `fourier_correlation`."""
    a, b = _spatial(a), _spatial(b)
    if a.ndim != 3:
        raise ValueError(f"fourier_shell_correlation needs 3D volumes, got shape {a.shape}")
    return fourier_correlation(a, b)


def half_bit_threshold(n_per_ring):
    """The 1/2-bit threshold curve of van Heel & Schatz (2005) for rings or shells
    holding n Fourier pixels: (0.2071 + 1.9102/sqrt(n)) / (1.2071 + 0.9102/sqrt(n)).
    It is 1 for n = 1 and falls to 0.2071 / 1.2071 = 0.1716 for large n."""
    root = 1.0 / np.sqrt(np.asarray(n_per_ring, np.float64))
    return (0.2071 + 1.9102 * root) / (1.2071 + 0.9102 * root)


def resolution_at(freq, curve, threshold, pixel_size=None):
    """Where `curve` first falls below `threshold` (a number or one value per ring).

    Ring 0 (the mean) is skipped. The crossing is interpolated linearly between the
    last ring at or above the threshold and the first ring below it; if ring 1 is
    already below, its frequency is returned. Returns cycles/pixel, or the resolution
    in Angstrom (pixel_size / frequency) when pixel_size (Angstrom/pixel) is given.
    Returns None when the curve never falls below the threshold (the resolution is
    finer than the sampling can show).
    """
    freq = np.asarray(freq, np.float64)
    gap = np.asarray(curve, np.float64) - np.broadcast_to(np.asarray(threshold, np.float64), freq.shape)
    below = np.flatnonzero(gap[1:] < 0) + 1
    if below.size == 0:
        return None
    i = below[0]
    if i == 1:
        crossing = freq[1]
    else:
        crossing = freq[i - 1] + (freq[i] - freq[i - 1]) * gap[i - 1] / (gap[i - 1] - gap[i])
    return float(crossing) if pixel_size is None else float(pixel_size / crossing)


def soft_edge(shape, fraction=1 / 16):
    """A window of `shape` that is 1 inside and falls to 0 at every face with a raised cosine
    `fraction` of each side wide. Multiplied into both arrays before a Fourier correlation,
    it removes the jump between opposite faces that the FFT's periodicity sees: that jump's
    leakage is shared by any smooth output and the reference and raises their correlation in
    the high rings, where it says nothing about the signal (the soft mask of cryo-EM practice)."""
    window = np.ones(shape)
    for axis, n in enumerate(shape):
        width = max(1, int(round(n * fraction)))
        ramp = np.ones(n)
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
        ramp[:width], ramp[n - width:] = edge, edge[::-1]
        window = window * ramp.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return window


def mean_frc(a, b) -> float:
    """Mean of the Fourier correlation from ring 1 up to Nyquist: a one-number summary
    for benchmark tables (ring 0, the mean, is left out)."""
    return float(np.mean(fourier_correlation(a, b)[1][1:]))


def snr_from_two_copies(a, b) -> float:
    """Real-space SNR (var(signal) / var(noise)) from two copies of one signal with
    independent noise: CCC / (1 - CCC), CCC their Pearson correlation (Frank & Al-Ali 1975)."""
    ccc = pearson_cc(a, b)
    return ccc / (1.0 - ccc)
