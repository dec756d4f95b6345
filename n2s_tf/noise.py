"""What the noise of one image looks like: its power spectrum, autocorrelation, a verdict white or
correlated, and whether its level changes with the brightness (noise_level_ratio).

Counting detectors do not give white noise: the detector's MTF, super-resolution counting
followed by Fourier cropping, and the interpolation of motion correction correlate
neighbouring pixels. A blind-spot network predicts a pixel from its neighbours, so noise
its neighbours predict passes through; n2s_tf.whitening undoes that colour first.

Method (noise_spectrum): the image is cut into tiles (64 px in 2D, 32 px in 3D), each tile's
mean is removed and a separable Hann window applied, and the periodograms of the tiles are
combined by their MEDIAN (divided by ln 2, the median of an exponential variable of mean 1),
so that tiles holding particles, carbon or ice edges do not count. Below `low_cut` cycles/px
the signal of a micrograph outweighs the noise even then, so the spectrum there is replaced
by its median on the ring just above (flat: the MTF, a Fourier crop and interpolation are
all flat near zero frequency). The autocorrelation is the inverse FFT of that spectrum,
normalized at lag 0, so it describes the noise and not the signal.

The verdict white / correlated reads the same periodograms above VERDICT_CUT only (flat
below it): a detector's colour is strongest there, and there the signal lies under the noise
in a micrograph and in most natural images, whose edges and textures between LOW_CUT and
VERDICT_CUT would otherwise read as correlated noise (and have a blind-spot model whiten a
photograph with white noise).
"""

import math

import numpy as np

TILE = {2: 64, 3: 32}
LOW_CUT = 0.125  # cycles/pixel: below it the micrograph's signal dominates the spectrum
MIN_TILE = 8  # smaller images (or axes) are refused: too few lags and frequencies to tell
MAX_TILES = 512  # periodograms combined at most (evenly spread tiles); bounds the cost on 4k images
# The verdict's spectrum is flat below this (cycles/pixel); see the module docstring.
VERDICT_CUT = 0.25
# |lag-1 autocorrelation| of that spectrum above which, along any axis, the noise is "correlated".
# It reads about 0.8 of the noise's whole lag 1 (filtered noise of lag 1 0.3 gives about 0.24),
# white noise about 0.01; a photograph's edges add to it as its noise gets weaker.
CORRELATED_LAG1 = 0.15
# Fewer pixels than this: verdict "unknown" (one tile's lag-1 estimate is too noisy to tell; on
# 128 x 128 pixels of white noise its spread is about 0.01, a tenth of CORRELATED_LAG1).
MIN_VERDICT_PIXELS = 128 * 128
LAGS = (1, 2, 3)
# noise_level_ratio: brightness groups, and the pixels measured at most (a central crop).
LEVEL_BINS = 10
LEVEL_PIXELS = 2**22
# white_noise_level reads the spectrum above this (cycles/pixel).
LEVEL_CUT = 0.4
# Largest noise_level_ratio of "homoscedastic" noise. Gaussian noise of sigma 15-50 on photographs
# reads 1.1-1.7 (edges and textures add to the residual), counting noise of micrographs 1.0-1.6;
# counting noise on a dark background, from 2 up to inf.
HETEROSCEDASTIC_RATIO = 2.0


def _as_planes(image, ndim):
    """(N, *spatial) view (the input's dtype: no float64 copy of a 4k micrograph) of `ndim` spatial axes."""
    image = np.asarray(image)
    ndim = image.ndim if ndim is None else ndim
    if ndim not in (2, 3) or image.ndim < ndim:
        raise ValueError(f"expected an image with 2 or 3 spatial axes, got shape {image.shape} (ndim={ndim})")
    return image.reshape((-1,) + image.shape[image.ndim - ndim:]), ndim


def _tiles(planes, tile, max_tiles):
    """Up to max_tiles non-overlapping tiles (M, tile, ..., tile), evenly spread over the planes."""
    ndim = planes.ndim - 1
    grid = [n // tile for n in planes.shape[1:]]
    corners = [(p,) + idx for p in range(len(planes)) for idx in np.ndindex(*grid)]
    step = max(1, math.ceil(len(corners) / max_tiles))
    return np.stack([planes[(c[0],) + tuple(slice(i * tile, (i + 1) * tile) for i in c[1:])]
                     for c in corners[::step]]).astype(np.float64), ndim


def _hann(tile, ndim):
    window = np.hanning(tile + 2)[1:-1]  # no zero end points: every pixel counts
    out = window
    for _ in range(ndim - 1):
        out = np.multiply.outer(out, window)
    return out


def frequency_radius(shape):
    """|f| in cycles/pixel on the unshifted FFT grid of `shape`."""
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    return np.sqrt(sum(g**2 for g in grids))


def noise_spectrum(image, ndim=None, tile=None, low_cut=LOW_CUT, max_tiles=MAX_TILES):
    """The noise power spectrum on a (tile,)*ndim unshifted FFT grid (float64).

    `image`: (H, W), (D, H, W) or (N, H, W) ...; `ndim` is its number of spatial axes
    (default image.ndim; 2 with a 3D array means a stack of planes). Tiles shrink to the
    image's shortest axis when it is smaller than `tile`. The spectrum's mean over
    the grid is the noise variance (for white noise of variance v every bin is about v).
    low_cut=0 keeps the measured spectrum at all frequencies (no signal in the image).
    """
    return flat_below(tile_spectrum(image, ndim, tile, max_tiles), low_cut)


def tile_spectrum(image, ndim=None, tile=None, max_tiles=MAX_TILES):
    """The median of the tiles' periodograms over ln 2 (noise_spectrum before its low cut)."""
    planes, ndim = _as_planes(image, ndim)
    tile = min(tile or TILE[ndim], *planes.shape[1:])
    if tile < MIN_TILE:
        raise ValueError(f"the image {planes.shape[1:]} is too small to measure its noise (under {MIN_TILE} px)")
    tiles, _ = _tiles(planes, tile, max_tiles)
    axes = tuple(range(1, ndim + 1))
    window = _hann(tile, ndim)
    tiles = (tiles - tiles.mean(axis=axes, keepdims=True)) * window
    periodograms = np.abs(np.fft.fftn(tiles, axes=axes)) ** 2 / np.sum(window**2)
    return np.median(periodograms, axis=0) / math.log(2) if len(tiles) > 2 else periodograms.mean(0)


def flat_below(spectrum, low_cut):
    """The spectrum with every bin below `low_cut` cycles/px set to its median on the ring
    just above (2 bins wide); unchanged for low_cut 0."""
    if low_cut <= 0:
        return spectrum
    radius = frequency_radius(spectrum.shape)
    ring = (radius >= low_cut) & (radius < low_cut + 2.0 / spectrum.shape[0])
    return np.where(radius < low_cut, np.median(spectrum[ring]), spectrum)


def radial_profile(spectrum, bins=None):
    """(frequencies, power): the spectrum's mean on rings of width 1/tile up to 0.5*sqrt(ndim)."""
    spectrum = np.asarray(spectrum)
    tile = spectrum.shape[0]
    index = np.rint(frequency_radius(spectrum.shape) * tile).astype(int).ravel()
    counts = np.bincount(index)
    power = np.bincount(index, spectrum.ravel()) / np.maximum(counts, 1)
    freqs = np.arange(len(power)) / tile
    keep = counts > 0
    return freqs[keep], power[keep]


def autocorrelation(spectrum):
    """Normalized autocorrelation (lag 0 = 1) on the spectrum's grid: inverse FFT of the power."""
    acf = np.fft.ifftn(spectrum).real
    return acf / acf.flat[0]


def axis_lags(acf, lags=LAGS):
    """{axis: [acf at lag k along that axis for k in lags]}; axes numbered from 0 (Y before X)."""
    out = {}
    for axis in range(acf.ndim):
        index = [0] * acf.ndim
        values = []
        for k in lags:
            index[axis] = k
            values.append(float(acf[tuple(index)]))
        out[axis] = values
    return out


def noise_report(image, ndim=None, tile=None, low_cut=LOW_CUT, max_tiles=MAX_TILES):
    """Characterize the noise of one image: a dict with

    spectrum (tile grid, `noise_spectrum`), radial (frequencies, power), lags {axis: [lag 1,
    2, 3]}, lag1 (largest |lag-1| over axes), verdict_lag1 (the same of the spectrum flat
    below VERDICT_CUT), verdict "white" or "correlated" (verdict_lag1 > CORRELATED_LAG1;
    "unknown" for images of fewer than MIN_VERDICT_PIXELS pixels), power_ratio (radial power
    near 0.1 over near 0.5 cycles/px, how much the spectrum falls).
    """
    measured = tile_spectrum(image, ndim, tile, max_tiles)
    spectrum = flat_below(measured, low_cut)
    lags = axis_lags(autocorrelation(spectrum))
    lag1 = max(abs(v[0]) for v in lags.values())
    verdict_lag1 = max(abs(v[0]) for v in axis_lags(autocorrelation(
        flat_below(measured, max(low_cut, VERDICT_CUT))), lags=(1,)).values())
    freqs, power = radial_profile(spectrum)
    ratio = float(np.interp(0.1, freqs, power) / max(np.interp(0.5, freqs, power), 1e-30))
    verdict = "correlated" if verdict_lag1 > CORRELATED_LAG1 else "white"
    if np.size(image) < MIN_VERDICT_PIXELS:
        verdict = "unknown"
    return {"spectrum": spectrum, "radial": (freqs, power), "lags": lags, "lag1": lag1,
            "verdict_lag1": verdict_lag1, "verdict": verdict, "power_ratio": ratio}


def white_noise_level(spectrum, above=LEVEL_CUT):
    """The std of white noise, from an image's tile spectrum (`tile_spectrum`, or a
    `noise_report`'s "spectrum", the same above LOW_CUT): the root of the median of its bins
    above `above` cycles/px. There the noise outweighs a photograph's signal, and a texture's
    few strong frequencies do not move the median."""
    spectrum = np.asarray(spectrum)
    return float(np.sqrt(np.median(spectrum[frequency_radius(spectrum.shape) >= above])))


def noise_level_ratio(image, ndim=None, bins=LEVEL_BINS, max_pixels=LEVEL_PIXELS):
    """How much the noise variance changes with the local brightness, from one image: the
    largest over the smallest noise variance of `bins` equal groups of pixels sorted by their
    local mean (a box of 5 pixels a side). A group's variance is (median |r| / 0.6745)^2, r the
    residual of the discrete Laplacian scaled to unit gain on white noise: the median leaves out
    the edges, a minority of any group. About 1 for Gaussian noise; for counting noise (variance
    = mean) the ratio of the brightest group's mean to the darkest's, inf where the darkest holds
    no noise at all. Images over max_pixels are measured on a central crop of that size.
    """
    from scipy import ndimage

    planes, ndim = _as_planes(image, ndim)
    spatial = planes.shape[1:]
    side = max(2, int(max_pixels ** (1 / ndim)))
    start = [max(0, (n - side) // 2) for n in spatial]
    planes = planes[(slice(None),) + tuple(slice(a, a + side) for a in start)].astype(np.float64)
    laplacian = np.zeros((1,) + (3,) * ndim)
    centre = (0,) + (1,) * ndim
    laplacian[centre] = -2.0 * ndim
    for axis in range(1, ndim + 1):
        for end in (0, 2):
            laplacian[centre[:axis] + (end,) + centre[axis + 1:]] = 1.0
    laplacian /= np.sqrt(np.sum(laplacian**2))
    residual = np.abs(ndimage.convolve(planes, laplacian, mode="reflect")).ravel()
    local = ndimage.uniform_filter(planes, (1,) + (5,) * ndim, mode="reflect").ravel()
    # Groups of equal count by brightness: a partition at the group edges, not a full sort.
    edges = [local.size * k // bins for k in range(1, bins)]
    groups = np.split(np.argpartition(local, edges), edges)
    variance = np.array([(np.median(residual[g]) / 0.6745) ** 2 for g in groups])
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(variance.max() / variance.min()) if variance.max() > 0 else 1.0


def homoscedastic(image, ndim):
    """Whether the noise of every channel of a (*spatial, C) image keeps one level whatever the
    brightness (`noise_level_ratio` at most HETEROSCEDASTIC_RATIO): what Fourier ring calibration's
    one noise power per image assumes. Counting noise on a dark background (fluorescence) does not."""
    return all(noise_level_ratio(image[..., c], ndim) <= HETEROSCEDASTIC_RATIO for c in range(image.shape[-1]))


def channel_reports(image, ndim):
    """noise_report of each channel of a (*spatial, C) image; None when it is too small to
    measure (a side under MIN_TILE)."""
    if min(image.shape[:ndim]) < MIN_TILE:
        return None
    return [noise_report(image[..., c], ndim) for c in range(image.shape[-1])]


def correlated_spectra(reports):
    """The noise spectrum of each channel (`channel_reports`) when any channel has correlated
    noise, else None (white, too small to tell: "unknown", or no reports). Inference and
    training whiten on it, with these very spectra."""
    if not reports or not any(report["verdict"] == "correlated" for report in reports):
        return None
    return [report["spectrum"] for report in reports]


def summary_line(report, axis_names=None):
    """One line: verdict, lags 1-3 per axis, radial power fall from 0.1 to 0.5 cycles/px, and
    the lag 1 the verdict reads (above VERDICT_CUT)."""
    names = axis_names or ("zyx"[-len(report["lags"]):])
    lags = "  ".join(f"{names[a]} " + "/".join(f"{v:.2f}" for v in vals) for a, vals in report["lags"].items())
    return (f"noise {report['verdict']}: autocorrelation at lags 1/2/3 {lags}; "
            f"power 0.1/0.5 cycles/px {report['power_ratio']:.1f}x; "
            f"lag 1 above {VERDICT_CUT} cycles/px {report['verdict_lag1']:.2f}")


def recorrupted_pair(image, noise_std, rng=None):
    """A Noise2Noise pair from one image with white Gaussian noise of std `noise_std`:
    image + noise_std z and image - noise_std z, z standard normal (float32; Pang et al.'s
    Recorrupted-to-Recorrupted). For noise n of that std the two noises n + s z and n - s z are
    uncorrelated, so independent when Gaussian: the same signal with independent noise of twice
    the variance each, as two halves of a dose have. A real micrograph with white noise (its
    verdict) then trains Noise2Noise alongside simulated movies; `calibration.white_noise_power`
    gives noise_std^2."""
    image = np.asarray(image, np.float32)
    z = np.float32(noise_std) * np.random.default_rng(rng).standard_normal(image.shape).astype(np.float32)
    return image + z, image - z
