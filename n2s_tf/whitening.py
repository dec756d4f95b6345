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


def apply_filter(image, gain, inverse=False, mean=None):
    """image (spatial axes only) filtered by `gain` (rfftn grid), or by 1 / gain; float32.

    The filter acts on image - mean (default: the image's mean) and the mean is added back:
    a large offset (uint16 counts) then costs no float32 precision. Whitening and
    re-colouring must pass the same mean to invert each other.
    """
    image = np.asarray(image, dtype=np.float32)
    mean = np.float32(image.mean(dtype=np.float64) if mean is None else mean)
    spectrum = scipy.fft.rfftn(image - mean)
    spectrum *= (1.0 / gain) if inverse else gain
    return (scipy.fft.irfftn(spectrum, s=image.shape) + mean).astype(np.float32)


def _channel_filters(image, ndim, spectra=None, **spectrum_options):
    """(gains, means) of each channel of a (*spatial, C) image: its own whitening filter
    (`spectra`: one per channel, else n2s_tf.noise.noise_spectrum with `spectrum_options`)."""
    channels = image.shape[-1]
    if spectra is None:
        spectra = [noise.noise_spectrum(image[..., c], ndim, **spectrum_options) for c in range(channels)]
    gains = [whitening_filter(s, image.shape[:-1]) for s in spectra]
    return gains, [image[..., c].mean(dtype=np.float64) for c in range(channels)]


def _whitened(image, gains, means):
    return np.stack([apply_filter(image[..., c], g, mean=m) for c, (g, m) in enumerate(zip(gains, means))], -1)


def whiten(image, ndim, spectra=None, **spectrum_options):
    """A (*spatial, C) image with each channel whitened by its own noise spectrum (`spectra`,
    else measured): what denoise_whitened gives its `denoise`, as training data for a model
    that denoises so."""
    image = np.asarray(image, dtype=np.float32)
    return _whitened(image, *_channel_filters(image, ndim, spectra, **spectrum_options))


def denoise_whitened(denoise, image, ndim, spectra=None, **spectrum_options):
    """denoise(whitened image) re-coloured; image is (*spatial, C) with `ndim` spatial axes.

    Each channel gets the filter of its own noise spectrum (`spectra`: one per channel, else
    estimated by n2s_tf.noise.noise_spectrum with `spectrum_options`). `denoise` maps a
    (*spatial, C) array to one of the same shape (the tiled prediction).
    """
    image = np.asarray(image, dtype=np.float32)
    gains, means = _channel_filters(image, ndim, spectra, **spectrum_options)
    output = np.asarray(denoise(_whitened(image, gains, means)), dtype=np.float32)
    return np.stack([apply_filter(output[..., c], g, inverse=True, mean=m)
                     for c, (g, m) in enumerate(zip(gains, means))], axis=-1)


# ----------------------------------------------------------------------------- in the SavedModel graph

def _tf_fftfreq(n):
    import tensorflow as tf

    i = tf.range(n)
    return tf.cast(tf.where(i < (n + 1) // 2, i, i - n), tf.float32) / tf.cast(n, tf.float32)


def _tf_median(values, axis=0):
    """np.median along `axis` (the mean of the two middle values for an even count)."""
    import tensorflow as tf

    ordered = tf.sort(values, axis=axis)
    n = tf.shape(values)[axis]
    return (tf.gather(ordered, (n - 1) // 2, axis=axis) + tf.gather(ordered, n // 2, axis=axis)) / 2


def graph_gain(image, auto=True, tile=noise.TILE[2], low_cut=noise.LOW_CUT, max_tiles=noise.MAX_TILES,
               floor=FLOOR, threshold=noise.CORRELATED_LAG1):
    """whitening_filter(noise_spectrum(image), image.shape) for one (H, W) float32 tensor, in TF ops.

    The same steps as the numpy functions (tiles, Hann window, median, flat low-cut, tapered
    autocovariance embedded in the image grid, floor), so TF Serving whitens as api.denoise does.
    auto=True returns ones when the noise is white (noise.noise_report's verdict: |lag 1| of the
    spectrum flat below noise.VERDICT_CUT at most `threshold` along both axes).
    """
    import tensorflow as tf

    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ones = lambda: tf.ones([h, w // 2 + 1], tf.float32)  # noqa: E731
    if auto:  # too small to tell (verdict "unknown"): left alone, as api.denoise does
        return tf.cond((tf.minimum(h, w) < noise.MIN_TILE) | (h * w < noise.MIN_VERDICT_PIXELS), ones,
                       lambda: _graph_gain(image, True, tile, low_cut, max_tiles, floor, threshold))
    return _graph_gain(image, False, tile, low_cut, max_tiles, floor, threshold)


def _graph_gain(image, auto, tile, low_cut, max_tiles, floor, threshold):
    import tensorflow as tf

    h, w = tf.shape(image)[0], tf.shape(image)[1]
    t = tf.minimum(tf.constant(tile), tf.minimum(h, w))
    gh, gw = h // t, w // t
    tiles = tf.reshape(tf.transpose(tf.reshape(image[:gh * t, :gw * t], [gh, t, gw, t]), [0, 2, 1, 3]),
                       [gh * gw, t, t])
    step = tf.maximum(1, -(-(gh * gw) // max_tiles))
    tiles = tiles[::step]
    window = tf.signal.hann_window(t + 2, periodic=False)[1:-1]
    window = window[:, None] * window[None, :]
    tiles = (tiles - tf.reduce_mean(tiles, axis=[1, 2], keepdims=True)) * window
    periodograms = tf.abs(tf.signal.fft2d(tf.complex(tiles, 0.0))) ** 2 / tf.reduce_sum(window**2)
    count = tf.shape(tiles)[0]
    spectrum = tf.cond(count > 2, lambda: _tf_median(periodograms) / np.log(2).astype(np.float32),
                       lambda: tf.reduce_mean(periodograms, axis=0))
    f = _tf_fftfreq(t)
    radius = tf.sqrt(f[:, None] ** 2 + f[None, :] ** 2)

    def flat_below(cut):  # noise.flat_below
        if cut <= 0:
            return spectrum
        ring = tf.boolean_mask(spectrum, (radius >= cut) & (radius < cut + 2.0 / tf.cast(t, tf.float32)))
        return tf.where(radius < cut, _tf_median(ring), spectrum)

    def autocovariance(power):
        return tf.math.real(tf.signal.ifft2d(tf.complex(power, 0.0)))

    acov = autocovariance(flat_below(low_cut))
    half = t // 2
    # Lags -half+1 .. half-1 in a (2 half - 1)^2 window, tapered, then put at their places mod (H, W).
    lags = tf.range(-half + 1, half)
    taper = tf.cos(np.pi * tf.cast(lags, tf.float32) / tf.cast(2 * half, tf.float32)) ** 2
    index = tf.math.floormod(lags, t)
    window_acov = tf.gather(tf.gather(acov, index, axis=0), index, axis=1) * taper[:, None] * taper[None, :]
    size = 2 * half - 1
    full = tf.pad(window_acov, [[0, h - size], [0, w - size]])
    full = tf.roll(full, shift=[-(half - 1), -(half - 1)], axis=[0, 1])
    power = tf.maximum(tf.math.real(tf.signal.rfft2d(full)), 0.0)
    mean = tf.reduce_mean(power)
    gain = tf.sqrt(mean / tf.maximum(power, floor * mean))
    if auto:  # noise.noise_report's verdict
        verdict = autocovariance(flat_below(max(low_cut, noise.VERDICT_CUT)))
        lag1 = tf.maximum(tf.abs(verdict[1, 0]), tf.abs(verdict[0, 1])) / verdict[0, 0]
        gain = tf.where(lag1 > threshold, gain, tf.ones_like(gain))
    return gain


def graph_filter(image, gain, mean, inverse=False):
    """apply_filter in TF ops for one (H, W) float32 tensor, around the given mean."""
    import tensorflow as tf

    spectrum = tf.signal.rfft2d(image - mean)
    gain = tf.complex(1.0 / gain if inverse else gain, 0.0)
    return tf.signal.irfft2d(spectrum * gain, fft_length=tf.shape(image)) + mean


def graph_denoise_whitened(denoise, images, auto=True):
    """denoise_whitened in the graph for a (N, H, W, C) float32 batch: each image and channel
    whitened with its own spectrum (auto: only where correlated), denoise(batch), re-coloured."""
    import tensorflow as tf

    shape = tf.shape(images)
    planes = tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [-1, shape[1], shape[2]])
    gains = tf.map_fn(lambda plane: graph_gain(plane, auto=auto), planes,
                      fn_output_signature=tf.TensorSpec([None, None], tf.float32))
    means = tf.reduce_mean(planes, axis=[1, 2])
    white = tf.map_fn(lambda a: graph_filter(*a), (planes, gains, means),
                      fn_output_signature=tf.TensorSpec([None, None], tf.float32))
    to_batch = lambda p: tf.transpose(tf.reshape(p, [shape[0], shape[3], shape[1], shape[2]]), [0, 2, 3, 1])  # noqa
    out = denoise(to_batch(white))
    out_planes = tf.reshape(tf.transpose(out, [0, 3, 1, 2]), [-1, shape[1], shape[2]])
    coloured = tf.map_fn(lambda a: graph_filter(*a, inverse=True), (out_planes, gains, means),
                         fn_output_signature=tf.TensorSpec([None, None], tf.float32))
    return to_batch(coloured)
