"""Tiled prediction for images too large to go through the network at once.

A 4k x 4k micrograph (or a tomogram) is cut into core tiles; each tile is predicted
inside a larger window that adds `context` pixels of real image around it, and only
the core is kept. Windows never reach outside the (stride-padded) image and always
start on the stride grid, so every pixel a core output depends on is computed exactly
as in a whole-image prediction: tiled and whole results agree to float round-off.
All windows have one shape, so a `tf.function` predict_fn is traced once (twice
with test-time augmentation on non-square windows).
"""

import math
import sys
import time
import warnings
from itertools import product

import keras
import numpy as np

from n2s_tf.errors import RepairedPixelsWarning

DEFAULT_TILE = {2: 1024, 3: 128}
# Activations summed over all layers undercount the peak of a forward pass a little
# (convolution scratch space, framework copies) and overcount it a little (not all
# layer outputs are alive at once); a factor 2 keeps the estimate on the safe side.
MEMORY_SAFETY = 2.0
PROBE_SIZE = 128  # spatial size used to probe a model with unknown input size


def _spatial_ndim(image):
    if image.ndim not in (3, 4):
        raise ValueError(f"expected an (H, W, C) image or a (D, H, W, C) volume, got shape {image.shape}")
    return image.ndim - 1


def padded_shape(spatial_shape, stride) -> tuple:
    """Each spatial size rounded up to a multiple of stride."""
    return tuple(_round_up(n, stride) for n in spatial_shape)


def pad_to_multiple(image, stride):
    """Pad the high end of each spatial axis of `image` up to a multiple of `stride`.

    Reflect padding (as the reference does) where the axis is longer than the pad;
    an axis that is too short for reflection is edge-padded instead. An image that needs
    no padding is returned as it is. Returns (padded, original spatial shape).
    """
    spatial = tuple(image.shape[:-1])
    shape = padded_shape(spatial, stride)
    if shape == spatial:
        return image, spatial
    padded = np.empty(shape + image.shape[-1:], image.dtype)
    crop(padded, spatial)[...] = image
    fill_padding(padded, spatial)
    return padded, spatial


def fill_padding(padded, spatial_shape) -> None:
    """Fill `padded` beyond the low corner of `spatial_shape`, in place, from that corner as
    pad_to_multiple pads (reflect, or repeat the edge on an axis too short to reflect)."""
    for axis, size in enumerate(spatial_shape):
        pad = padded.shape[axis] - size
        if pad:
            source = np.arange(size - 2, size - 2 - pad, -1) if pad < size else np.full(pad, size - 1)
            target = [slice(None)] * padded.ndim
            target[axis] = slice(size, size + pad)
            padded[tuple(target)] = np.take(padded, source, axis=axis)


def crop(image, spatial_shape):
    """Keep the low corner of `image` with the given spatial shape (undoes pad_to_multiple)."""
    return image[tuple(slice(0, n) for n in spatial_shape)]


def context_size(receptive_field, stride):
    """Context pixels per side: ceil(receptive_field / 2) rounded up to a multiple of stride."""
    return _round_up(math.ceil(receptive_field / 2), stride)


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def choose_tile(spatial_shape, stride, receptive_field, tile=None, max_memory=None, bytes_per_pixel=None):
    """Core tile side (a multiple of stride) for a padded image of `spatial_shape`.

    `tile` is rounded up to a multiple of stride. With `max_memory` (bytes) the tile is
    the largest whose window (tile + 2 * context per axis, clipped to the image) needs at
    most max_memory at `bytes_per_pixel`, and never below 2 * stride. Otherwise 1024 (2D)
    or 128 (3D). Tiles larger than an axis are clipped to it by the caller.
    """
    if tile is not None and max_memory is not None:
        raise ValueError("give either tile or max_memory, not both")
    if tile is not None:
        if tile < 1:
            raise ValueError(f"tile must be a positive number of pixels, got {tile}")
        return _round_up(int(tile), stride)
    if max_memory is None:
        return _round_up(DEFAULT_TILE[len(spatial_shape)], stride)
    if not bytes_per_pixel:
        raise ValueError("max_memory needs bytes_per_pixel (see estimate_bytes_per_pixel)")
    context = context_size(receptive_field, stride)
    for candidate in range(_round_up(max(spatial_shape), stride), 2 * stride - 1, -stride):
        window_pixels = math.prod(min(n, candidate + 2 * context) for n in spatial_shape)
        if window_pixels * bytes_per_pixel <= max_memory:
            return candidate
    return 2 * stride


def _axis_windows(size, tile, context, stride):
    """Along one axis: (core start, window start) pairs, the core length, the window length.

    As many cores as tiles of length `tile` need to cover [0, size), of one length (a multiple
    of stride, at most tile) shared out evenly, so that little is computed twice; the last one
    is moved back to end at the image edge. A window keeps its length and slides inwards at
    the image edges, where the real border replaces the missing context.
    """
    count = -(-size // tile)
    core = min(_round_up(-(-size // count), stride), size)
    window = min(size, core + 2 * context)
    starts = sorted({min(start, size - core) for start in range(0, size, core)})
    return [(start, min(max(start - context, 0), size - window)) for start in starts], core, window


class StandardizedWindows:
    """An image standardized with `stats` and padded to the stride as pad_to_multiple pads,
    made window by window when a window is read (`windows[slices]`), never as a whole: for
    predict_tiled on an image whose pixels are all finite, so that a tomogram is not copied.
    A window equals the same window of the padded, standardized copy exactly."""

    def __init__(self, image, stride, stats):
        self.image = image
        self.mean, self.std = stats
        self.spatial = tuple(image.shape[:-1])
        self.shape = padded_shape(self.spatial, stride) + image.shape[-1:]

    def __getitem__(self, window):
        inside = tuple(slice(w.start, min(w.stop, n)) for w, n in zip(window, self.spatial))
        block = np.empty(tuple(w.stop - w.start for w in window) + self.shape[-1:], np.float32)
        region = crop(block, [w.stop - w.start for w in inside])
        region[...] = (np.asarray(self.image[inside], np.float64) - self.mean) / self.std
        # The reflection reads only pixels inside the window (a window that reaches the
        # padding holds more than the pad of real pixels before it), so it is the global one.
        fill_padding(block, region.shape[:-1])
        return block


def _predict(predict_fn, batch):
    out = np.asarray(predict_fn(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)
    if out.shape != batch.shape:
        raise ValueError(f"predict_fn returned shape {out.shape} for an input of shape {batch.shape}")
    return out


def _predict_tta(predict_fn, batch):
    """Mean of the predictions over the 8 rotations/flips of the (H, W) plane, each undone."""
    plane = (-3, -2)
    total = np.zeros(batch.shape, np.float64)  # float64 so that 8 equal values average exactly
    for k in range(4):
        for flip in (False, True):
            view = np.flip(batch, -2) if flip else batch
            out = np.rot90(_predict(predict_fn, np.rot90(view, k, plane)), -k, plane)
            total += np.flip(out, -2) if flip else out
    return (total / 8).astype(np.float32)


class _Progress:
    """Tiles done / total, elapsed, time left: one self-overwriting line on a terminal; else
    (a batch job's log) a line every `every` seconds, none for a prediction shorter than that."""

    def __init__(self, total, every=60.0, stream=None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.total, self.every, self.clock = total, every, clock
        self.start = self.last = clock()
        self.tty = self.stream.isatty()

    def update(self, done):
        now = self.clock()
        elapsed = now - self.start
        left = elapsed / done * (self.total - done)
        line = f"tiles {done}/{self.total}  elapsed {elapsed:.1f} s  left {left:.1f} s"
        if self.tty:
            self.stream.write(f"\r{line}" + ("\n" if done == self.total else ""))
        elif now - self.last >= self.every and done < self.total:
            self.stream.write(line + "\n")
            self.last = now
        else:
            return
        self.stream.flush()


def predict_tiled(predict_fn, image, stride, receptive_field, tile=None, max_memory=None,
                  bytes_per_pixel=None, tta=False, progress=False, image_shape=None):
    """Predict a standardized (H, W, C) image or (D, H, W, C) volume tile by tile.

    `image` may also be StandardizedWindows, read window by window.
    predict_fn maps a float32 batch (1, *spatial, C), spatial sizes multiples of stride,
    to an array of the same shape. receptive_field is the width along one axis of the
    input region one output pixel depends on; each tile gets ceil(receptive_field / 2)
    context pixels, rounded up to the stride, which covers a region centred on the pixel
    (as in 'same'-padded U-Nets; the rounding leaves slack for off-centre by a few pixels).
    The result then equals predict_whole(predict_fn, image, stride) up to float round-off.
    tta=True averages the 8 rotations/flips of the (H, W) plane, applied per window.
    image_shape: the spatial shape of the real image when `image` is already padded to the
    stride (by fill_padding, as denoise_array does); the result has that shape.
    """
    if isinstance(image, StandardizedWindows):
        padded, spatial_shape = image, image.spatial
    else:
        image = np.asarray(image, dtype=np.float32)
        _spatial_ndim(image)
        padded, spatial_shape = pad_to_multiple(image, stride)
    if image_shape is not None:
        if padded is not image or padded_shape(image_shape, stride) != spatial_shape:
            raise ValueError(f"an image of shape {image.shape} is not image_shape {image_shape} padded to {stride}")
        spatial_shape = tuple(image_shape)
    tile = choose_tile(padded.shape[:-1], stride, receptive_field, tile, max_memory, bytes_per_pixel)
    context = context_size(receptive_field, stride)
    pairs_per_axis, cores, windows = zip(*(_axis_windows(n, tile, context, stride) for n in padded.shape[:-1]))
    predict = _predict_tta if tta else _predict
    output = np.empty(spatial_shape + padded.shape[-1:], np.float32)  # the padding is never kept
    combos = list(product(*pairs_per_axis))
    meter = _Progress(len(combos)) if progress else None
    for done, pairs in enumerate(combos, 1):
        window = tuple(slice(w, w + n) for (_, w), n in zip(pairs, windows))
        # Each core less its part in the padding (every core starts inside the image).
        kept = [min(n, size - s) for (s, _), n, size in zip(pairs, cores, spatial_shape)]
        core_in_window = tuple(slice(s - w, s - w + n) for (s, w), n in zip(pairs, kept))
        core = tuple(slice(s, s + n) for (s, _), n in zip(pairs, kept))
        output[core] = predict(predict_fn, padded[window][None])[0][core_in_window]
        if meter:
            meter.update(done)
    return output


def predict_whole(predict_fn, image, stride):
    """Predict the whole image at once: reflect-pad to a multiple of stride, predict, crop."""
    image = np.asarray(image, dtype=np.float32)
    _spatial_ndim(image)
    padded, spatial_shape = pad_to_multiple(image, stride)
    return crop(_predict(predict_fn, padded[None])[0], spatial_shape)


def denoise_array(predict_fn, image, stride, receptive_field, calibrate=False, **tiling):
    """Standardize each channel by its own mean/std, predict tiled, restore the input scale.

    `tiling` is passed to predict_tiled (tile, max_memory, bytes_per_pixel, tta, progress).
    calibrate=True mixes prediction and input per Fourier ring (`n2s_tf.calibration`; two
    predictions). The output is float32 with the input's scale; it is not clipped.
    Non-finite pixels (NaN, Inf) are left out of the mean and std and replaced by the median
    of their finite neighbours (`data.repair_nonfinite`), with a RepairedPixelsWarning; their
    output is the denoised repaired value. An image with no finite pixel is a UserError.
    Memory besides the tiles: the float32 output; the input itself is only read, window by
    window (StandardizedWindows). With non-finite pixels to repair, or calibrate, also one
    float32 copy of the image, padded to the stride and standardized in place.
    """
    from n2s_tf import calibration
    from n2s_tf.data import all_finite, channel_stats, standardize
    from n2s_tf.io import slabs

    image = np.asarray(image)
    _spatial_ndim(image)
    if not calibrate and all_finite(image):
        mean, std = stats = channel_stats(image)
        prediction = predict_tiled(predict_fn, StandardizedWindows(image, stride, stats), stride, receptive_field,
                                   **tiling)
    else:
        spatial = tuple(image.shape[:-1])
        padded = np.empty(padded_shape(spatial, stride) + image.shape[-1:], np.float32)
        region = crop(padded, spatial)
        region[...] = image
        mean, std = standardize(region, out=region)[1]
        _repair(region, image.size)
        fill_padding(padded, spatial)
        if calibrate:
            predict = lambda x: predict_tiled(predict_fn, x, stride, receptive_field, **tiling)  # noqa: E731
            prediction = calibration.calibrate(predict, region)
        else:
            prediction = predict_tiled(predict_fn, padded, stride, receptive_field, image_shape=spatial, **tiling)
        del padded, region
    for rows in slabs(prediction):
        prediction[rows] = prediction[rows] * std + mean
    return prediction


def _repair(standardized, size):
    """Repair the non-finite pixels of a standardized image in place, with the warning."""
    from n2s_tf.data import repair_nonfinite

    repaired = repair_nonfinite(standardized)
    if repaired:
        warnings.warn(f"replaced {repaired} non-finite pixel value(s) (NaN or Inf) of {size} by the median "
                      f"of their finite neighbours", RepairedPixelsWarning, stacklevel=4)


def repaired_copy(image):
    """A float32 copy of a channels-last image whose non-finite pixels are repaired as
    denoise_array repairs them, in the image's own units: for steps before it that need every
    pixel finite (the whitening's Fourier transforms)."""
    from n2s_tf.data import standardize

    x, (mean, std) = standardize(image)
    _repair(x, image.size)
    return (x * std + mean).astype(np.float32)


def estimate_bytes_per_pixel(model):
    """Activation bytes a keras functional/Sequential model needs per input pixel.

    Sums the float32 outputs of all layers for a symbolic probe input (128 px per
    unknown spatial axis; no computation runs), plus the working values of layers that
    declare them (`working_elements_per_pixel`, e.g. neighbourhood attention's windows),
    and divides by the probe's pixel count, times MEMORY_SAFETY. Only used to pick a tile
    size from a memory budget.
    """
    if not getattr(model, "inputs", None):
        raise ValueError("estimate_bytes_per_pixel needs a built functional or Sequential keras model")
    input_shape = model.inputs[0].shape
    spatial = [PROBE_SIZE if n is None else n for n in input_shape[1:-1]]
    probe = keras.Model(model.inputs, [layer.output for layer in model.layers])
    specs = probe.compute_output_spec(keras.KerasTensor((1, *spatial, input_shape[-1])))
    elements = 0
    for layer, spec in zip(model.layers, specs):
        outputs = keras.tree.flatten(spec)
        elements += sum(math.prod(out.shape) for out in outputs)
        if hasattr(layer, "working_elements_per_pixel"):
            elements += math.prod(outputs[0].shape[:-1]) * layer.working_elements_per_pixel()
    return elements * 4 / math.prod(spatial) * MEMORY_SAFETY
