"""Fourier ring calibration: the network's output and the noisy input, mixed per frequency ring.

A self-supervised network predicts each pixel mostly from its neighbours (the blind spot), so
near Nyquist its output is weakly, even negatively, correlated with the signal, and at lower
frequencies its amplitude is off, while the noisy input still carries signal everywhere. For
each ring (shell in 3D) k this picks the real weights a_k, b_k of  a_k F + b_k Y  that minimise
the expected squared error against the unknown clean image S, from one noisy image alone
(Stein's unbiased risk estimate), per Fourier coefficient of the ring:

    E[S conj(Y)] = E|Y|^2 - sigma^2         (= E|S|^2 >= 0: see `nonnegative_mean`)
    E[S conj(F)] = E[Y conj(F)] - sigma^2 div_k F

div_k F, the ring's part of the network's divergence, is estimated by Monte Carlo from one more
prediction at y + eps * delta (delta white, unit variance). sigma^2 is the mean power of the
outer rings, where white noise outweighs the signal (a slight overestimate, so a slightly
conservative mix). The ring sums are smoothed over neighbouring rings before solving.

Assumes white noise independent of the signal (counting noise of a micrograph, Gaussian noise
added to an image); noise that was filtered or Fourier-cropped before denoising is not white,
and its sigma^2 from the outer rings is then wrong.

With two halves of the data (even/odd frame sums or tomograms: the same signal, independent
noise), `calibrate_halves` needs no noise model at all: for Y = (Y_a + Y_b) / 2 and
F = (F_a + F_b) / 2, F_a predicted from half a alone,

    E[S conj(Y)] = E[Y_a conj(Y_b)]     E[S conj(F)] = (E[F_a conj(Y_b)] + E[F_b conj(Y_a)]) / 2

so correlated, anisotropic noise (a tomogram's) is calibrated as exactly as white noise.
"""

import dataclasses
import itertools

import numpy as np
import scipy.fft
from scipy.special import erfcx

from n2s_tf.metrics import fourier_radius, fourier_rings, mirror_weights

OUTER = 0.9  # rings from this fraction of Nyquist outwards estimate the noise power
SMOOTH_RINGS = 4.0  # Gaussian width, in rings, of the smoothing of the ring sums
EPS = 0.2  # probe step, in units of the standardized image (large enough for bfloat16)
RIDGE = 1e-3  # pull toward (1, 0), relative to each ring power: a near-linear network makes F ~ Y
TILT_SECTORS = 10  # calibrate_halves of volumes: angular bins about the tilt axis (chosen on seed 7)
# calibrate_halves takes larger images in blocks of BLOCK_PIXELS pixels (four float64 spectra
# each) with HALO pixels of context each side.
BLOCK_PIXELS = 2**23
HALO = 16


def white_noise_power(y, outer=OUTER):
    """Power per Fourier coefficient (orthonormal FFT) of the white noise in the real array y,
    as the mean power of the rings from `outer` x Nyquist to Nyquist."""
    ring, weight = fourier_rings(y.shape)
    return _noise_power(np.fft.rfftn(y, norm="ortho"), ring, weight, min(y.shape) // 2, outer)


def _noise_power(Y, ring, weight, nyquist, outer=OUTER):
    band = (ring >= outer * nyquist) & (ring <= nyquist)
    return float(np.sum(weight[band] * np.abs(Y[band]) ** 2) / np.sum(weight[band]))


def _smooth(values, width, power=1):
    """Gaussian smoothing over rings 1.. (ring 0, the mean, stays apart), reflected at the ends;
    power > 1 raises the kernel to that power (for the variance of a smoothed sum)."""
    if width <= 0 or values.size < 3:
        return values
    half = int(np.ceil(4 * width))
    kernel = np.exp(-0.5 * power * (np.arange(-half, half + 1) / width) ** 2)
    rest = values[1:]
    padded = np.pad(rest, half, mode="reflect" if rest.size > half else "edge")
    return np.concatenate([values[:1], np.convolve(padded, kernel, mode="valid")])


def nonnegative_mean(estimate, error):
    """Mean of a quantity known to be >= 0, from an unbiased estimate with a normal error of the
    given standard deviation: the mean of that normal truncated at 0 (a flat prior on [0, inf)).
    Where the estimate is many errors below 0 this tends to 0; far above, to the estimate."""
    z = estimate / error
    # phi(z) / Phi(z) through the scaled complementary error function: no overflow or 0/0 far
    # into the negative tail, where phi and Phi both vanish.
    mills = np.sqrt(2 / np.pi) / erfcx(-z / np.sqrt(2))
    return np.maximum(estimate + error * mills, 0.0)


def ring_weights(y, f, f_probe, delta, eps=EPS, sigma2=None, smooth=SMOOTH_RINGS):
    """The per-ring weights (a, b) of a F + b Y, for real arrays of one shape: y the noisy
    image, f the prediction, f_probe the prediction of y + eps * delta; sigma2 the noise power
    per coefficient (default: `white_noise_power(y)`). Ring 0 (the mean) keeps (1, 0)."""
    ring, weight = fourier_rings(y.shape)
    spectra = [np.fft.rfftn(x, norm="ortho") for x in (y, f, f_probe, delta)]
    return _weights(*spectra, ring, weight, min(y.shape) // 2, eps, sigma2, smooth)


def _weights(Y, F, F_probe, D, ring, weight, nyquist, eps, sigma2, smooth):
    """ring_weights from the orthonormal spectra Y, F, F_probe (of f_probe) and D (of delta)."""
    sigma2 = _noise_power(Y, ring, weight, nyquist) if sigma2 is None else sigma2
    divergence = D * np.conj(F_probe - F) / eps

    def ring_sum(values):
        return _smooth(np.bincount(ring.ravel(), (weight * values).ravel()), smooth)

    count = ring_sum(1.0)
    p_ff = ring_sum(np.abs(F) ** 2) / count
    p_yy = ring_sum(np.abs(Y) ** 2) / count
    p_yf = ring_sum((Y * np.conj(F)).real) / count
    s_f = p_yf - sigma2 * ring_sum(divergence.real) / count  # E[S conj F]
    # E[S conj Y] = E|S|^2 cannot be negative; where the ring's signal is far below the noise the
    # plain estimate is negative about half the time, which flips the sign of the input's weight.
    # Its error is p_yy / sqrt(n), n the independent coefficients in the smoothed ring sum (|Y|^2
    # is exponential). Clipping the estimate at 0 left those rings with the part of the network's
    # output orthogonal to the input, uncorrelated with the signal there; the mean of the
    # truncated normal keeps a weight on the input as large as the error allows (measured in
    # docs/benchmarks.md, calibration fixes).
    with np.errstate(divide="ignore", invalid="ignore"):
        s_y = nonnegative_mean(p_yy - sigma2, p_yy / np.sqrt(_independent(np.bincount(ring.ravel()), smooth)))
    return _solve(p_ff, p_yy, p_yf, s_f, s_y)


def _independent(coefficients, smooth):
    """The number of independent coefficients in each smoothed ring sum, from the number of
    coefficients in each ring."""
    coefficients = np.asarray(coefficients, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # rings without a counted coefficient
        return _smooth(coefficients, smooth) ** 2 / _smooth(coefficients, smooth, power=2)


def _solve(p_ff, p_yy, p_yf, s_f, s_y):
    """The ring weights (a, b) from the ring means of |F|^2, |Y|^2, Re Y conj F and the
    estimates of Re E[S conj F] and E|S|^2."""
    # Solve [[p_ff, p_yf], [p_yf, p_yy]] (a, b) = (s_f, s_y) with a small ridge toward (1, 0):
    # where F is nearly proportional to Y in a ring the plain system is singular.
    # Each diagonal term is scaled by itself (the weights do not depend on the scale of F or
    # Y): a ridge from the mean power, which the noise dominates near Nyquist, pulled a toward 1
    # there and mixed in the network's uncorrelated high frequencies (docs/benchmarks.md).
    m_ff, m_yy = p_ff * (1 + RIDGE), p_yy * (1 + RIDGE)
    s_f, det = s_f + RIDGE * p_ff, m_ff * m_yy - p_yf**2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (s_f * m_yy - s_y * p_yf) / det
        b = (m_ff * s_y - p_yf * s_f) / det
    keep = ~(np.isfinite(a) & np.isfinite(b))
    keep[0] = True
    a[keep], b[keep] = 1.0, 0.0
    return a, b


# The per-ring sums the halves' weights are solved from, in this order; they add over blocks.
_HALVES_SUMS = ("count", "ff", "yy", "yf", "sf", "cross", "aa", "bb", "coefficients")


def _halves_sums(Y_a, Y_b, F_a, F_b, bins, weight, count):
    """(len(_HALVES_SUMS), count) sums over each of `count` bins (`bins` of every coefficient)
    of the orthonormal spectra of two halves and of their predictions (F, Y the means of the
    predictions and of the halves), each coefficient counted with its `weight`."""
    bins, weight = bins.ravel(), np.broadcast_to(weight, bins.shape).ravel()

    def bin_sum(values):
        return np.bincount(bins, weight * np.ravel(values), minlength=count)

    Y, F = (Y_a + Y_b) / 2, (F_a + F_b) / 2
    return np.stack([
        np.bincount(bins, weight, minlength=count), bin_sum(np.abs(F) ** 2), bin_sum(np.abs(Y) ** 2),
        bin_sum((Y * np.conj(F)).real), bin_sum((F_a * np.conj(Y_b) + F_b * np.conj(Y_a)).real / 2),
        bin_sum((Y_a * np.conj(Y_b)).real), bin_sum(np.abs(Y_a) ** 2), bin_sum(np.abs(Y_b) ** 2),
        np.bincount(bins, minlength=count)])


def _solve_halves(sums, smooth):
    """The per-ring weights (a, b) of a F + b Y from `_halves_sums`. Ring 0 (the mean) keeps
    (1, 0). E[S conj F] is the mean of E[F_a conj Y_b] and E[F_b conj Y_a], E|S|^2 is
    E[Y_a conj Y_b]."""
    named = dict(zip(_HALVES_SUMS, sums))
    count = _smooth(named["count"], smooth)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = {name: _smooth(named[name], smooth) / count for name in _HALVES_SUMS[1:-1]}
        # The cross product's error: |Y_a| |Y_b| over the independent coefficients of the ring sum.
        error = np.sqrt(mean["aa"] * mean["bb"] / _independent(named["coefficients"], smooth))
        s_y = nonnegative_mean(mean["cross"], error)
    return _solve(mean["ff"], mean["yy"], mean["yf"], mean["sf"], s_y)


def tilt_sectors(shape, sectors):
    """For every coefficient of rfftn of a (Z, Y, X) volume, which of `sectors` equal bins of
    |cos| of its direction's angle to Z about the Y axis (the tilt axis) it falls in. A
    tomogram's data differ with that angle: the missing wedge holds none, and back-projection's
    noise varies with it."""
    kz, _, kx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), np.fft.rfftfreq(shape[2]),
                            indexing="ij", sparse=True)
    radius = np.hypot(kz, kx)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(radius > 0, np.abs(kz) / radius, 0.0)
    sector = np.minimum((cosine * sectors).astype(np.int64), sectors - 1)
    return np.broadcast_to(sector, (shape[0], shape[1], shape[2] // 2 + 1))


@dataclasses.dataclass(frozen=True)
class HalvesWeights:
    """The fitted weights of a F + b Y, each (sectors, rings): ring k stands for the frequency
    radius k / side cycles/pixel, so they apply to any block of the image."""

    a: np.ndarray
    b: np.ndarray
    side: int

    def mix(self, F, Y, shape):
        """a F + b Y for the rfftn spectra F, Y of a real array of `shape`, each coefficient
        with the weights of its ring (the outermost fitted one beyond it) and sector."""
        ring, sector = _rings(shape, self.side, self.a.shape[0])
        ring = np.minimum(ring, self.a.shape[1] - 1)
        return self.a[sector, ring] * F + self.b[sector, ring] * Y


def _rings(shape, side, sectors):
    """Ring (frequency radius times `side`, rounded) and tilt sector of every coefficient of
    rfftn of a real array of `shape`."""
    ring = np.floor(fourier_radius(shape) * side + 0.5).astype(np.int64)
    return ring, (tilt_sectors(shape, sectors) if sectors > 1 else np.zeros(ring.shape, np.int64))


def _blocks(shape, max_pixels, halo):
    """(core, indices) of blocks that cover `shape`: `core` the slices a block writes, `indices`
    per axis the positions it reads (wrapped at the ends): an axis longer than a block's side
    is cut into nearly equal pieces with `halo` more each side. An image of at most max_pixels
    pixels is one block without halo."""
    if np.prod(shape) <= max_pixels:
        return [(tuple(slice(0, n) for n in shape), [np.arange(n) for n in shape])]
    side = int(max_pixels ** (1 / len(shape)) + 1e-9)
    per_axis = []
    for n in shape:
        pieces = 1 if n <= side else -(-n // max(1, side - 2 * halo))
        ends = np.linspace(0, n, pieces + 1).round().astype(int).tolist()
        extra = 0 if pieces == 1 else halo
        per_axis.append([(slice(lo, hi), np.arange(lo - extra, hi + extra) % n) for lo, hi in zip(ends, ends[1:])])
    return [(tuple(core for core, _ in pieces), [index for _, index in pieces])
            for pieces in itertools.product(*per_axis)]


def calibrate_halves(y_a, y_b, f_a, f_b, smooth=SMOOTH_RINGS, sectors=1):
    """The mean prediction of two halves calibrated ring by ring against the mean half
    (see the module docstring): float32, the shape of y_a, one channel without channel axis.
    sectors > 1 (volumes) fits the weights apart in each `tilt_sectors` bin of every shell.

    Memory stays bounded at any size: an image of more than BLOCK_PIXELS pixels is taken in
    blocks with HALO pixels of context each side (wrapped at the image's edges, as a
    whole-image FFT wraps them). The ring sums of all blocks give the weights (Welch's
    averaged spectra), and each block is then mixed with them: the weights are smooth in
    frequency, so the mix is a short filter and the blocks agree with a whole-image mix."""
    shape = np.shape(y_a)
    blocks = _blocks(shape, BLOCK_PIXELS, HALO)
    side = min(len(index) for _, indices in blocks for index in indices)
    # The same smoothing in cycles/pixel as one whole-image fit would have: the blocks'
    # averaged sums are no noisier per ring than the whole image's, only coarser.
    smooth = smooth * side / min(shape)
    rings = int(0.5 * np.sqrt(len(shape)) * side + 0.5) + 1  # every frequency is at most 1/2 per axis

    def spectra(indices):
        where = np.ix_(*indices)
        return [scipy.fft.rfftn(np.asarray(x[where], np.float32), norm="ortho", workers=-1)
                for x in (y_a, y_b, f_a, f_b)]

    sums = 0
    for _, indices in blocks:
        block_shape = tuple(map(len, indices))
        ring, sector = _rings(block_shape, side, sectors)
        last = spectra(indices)
        sums = sums + _halves_sums(*last, sector * rings + ring, mirror_weights(block_shape[-1]), sectors * rings)
    sums = sums.reshape(len(_HALVES_SUMS), sectors, rings)
    sums = sums[..., : np.flatnonzero(sums[0].sum(axis=0))[-1] + 1]  # up to the outermost ring held
    fitted = [_solve_halves(sums[:, s], smooth) for s in range(sectors)]
    weights = HalvesWeights(np.array([a for a, _ in fitted]), np.array([b for _, b in fitted]), side)

    out = np.empty(shape, np.float32)
    for core, indices in blocks:
        Y_a, Y_b, F_a, F_b = last if len(blocks) == 1 else spectra(indices)
        block_shape = tuple(map(len, indices))
        mixed = scipy.fft.irfftn(weights.mix((F_a + F_b) / 2, (Y_a + Y_b) / 2, block_shape), s=block_shape,
                                 norm="ortho", workers=-1)
        # The core sits in the middle of each axis it was cut from (after its halo), and fills
        # the others.
        offsets = [(len(index) - (c.stop - c.start)) // 2 for c, index in zip(core, indices)]
        out[core] = mixed[tuple(slice(o, o + c.stop - c.start) for o, c in zip(offsets, core))]
    return out


def calibrate(predict, image, eps=EPS, smooth=SMOOTH_RINGS, seed=0):
    """Predict a standardized (*spatial, C) array and calibrate the prediction ring by ring,
    each channel on its own. predict maps such an array to its prediction; it is called twice
    (the image, and the image plus a small white probe). Same seed, same output."""
    image = np.asarray(image, np.float32)
    delta = np.random.default_rng(seed).standard_normal(image.shape).astype(np.float32)
    f = predict(image)
    f_probe = predict(image + eps * delta)
    spatial = image.shape[:-1]
    ring, weight = fourier_rings(spatial)
    axes = tuple(range(len(spatial)))
    out = np.empty_like(f)
    for c in range(image.shape[-1]):
        # float64 spectra, each computed once: numpy would keep float32 input in complex64.
        Y, F, F_probe, D = (np.fft.rfftn(x[..., c].astype(np.float64), norm="ortho")
                            for x in (image, f, f_probe, delta))
        a, b = _weights(Y, F, F_probe, D, ring, weight, min(spatial) // 2, eps, None, smooth)
        out[..., c] = np.fft.irfftn(a[ring] * F + b[ring] * Y, s=spatial, axes=axes, norm="ortho")
    return out
