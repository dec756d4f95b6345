"""Building blocks shared by the networks, for 2D and 3D alike.

- `spatial_layers(ndim)` picks the Keras conv / transposed-conv / max-pool classes.
- `network_input(ndim, channels)` is the checked input of every network (unknown spatial size).
- `BlurPool` (N2V2 downsampling) and `ResizeBy2` (bilinear / trilinear upsampling) are custom
  layers written with dynamic shapes, because `UpSampling2D(interpolation="bilinear")` fails to
  trace for SavedModel export when the spatial size is unknown.
- `receptive_field(path, stride)` computes a network's receptive field from its layer path.
"""

import collections
import math

import keras
import numpy as np
import tensorflow as tf

SpatialLayers = collections.namedtuple("SpatialLayers", ["conv", "conv_transpose", "max_pool"])

_SPATIAL = {
    2: SpatialLayers(keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.MaxPooling2D),
    3: SpatialLayers(keras.layers.Conv3D, keras.layers.Conv3DTranspose, keras.layers.MaxPooling3D),
}


def spatial_layers(ndim):
    """Keras layer classes (conv, conv_transpose, max_pool) for `ndim` spatial axes."""
    if ndim not in _SPATIAL:
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    return _SPATIAL[ndim]


def network_input(ndim, channels):
    """The input of a network: any batch and spatial size, `channels` channels last."""
    spatial_layers(ndim)  # validates ndim
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    return keras.Input(shape=(None,) * ndim + (channels,))


def _spatial_rank(shape):
    ndim = len(shape) - 2
    if ndim not in _SPATIAL:
        raise ValueError(f"expected a batch of 2D or 3D channels-last arrays, got shape {shape}")
    return ndim


@keras.saving.register_keras_serializable(package="n2s_tf")
class BlurPool(keras.layers.Layer):
    """Blur every channel with the binomial [1, 2, 1] / 4 filter, then keep every second pixel.

    The image is reflect-padded by one pixel (so every spatial size must be at least 2), and
    output pixel i is centred on input pixel 2 i.
    """

    def call(self, x):
        ndim = _spatial_rank(x.shape)
        taps = np.array([1.0, 2.0, 1.0]) / 4.0
        kernel = taps
        for _ in range(ndim - 1):
            kernel = np.multiply.outer(kernel, taps)
        kernel = tf.constant(kernel[..., None, None], dtype=x.dtype)

        x = tf.pad(x, [[0, 0]] + [[1, 1]] * ndim + [[0, 0]], mode="REFLECT")
        # Fold the channels into the batch so that one single-channel kernel blurs each of them
        # (there is no depthwise 3D convolution).
        to_front = [0, ndim + 1] + list(range(1, ndim + 1))
        y = tf.transpose(x, to_front)
        batch_and_channels = tf.shape(y)[:2]
        y = tf.reshape(y, tf.concat([[-1], tf.shape(y)[2:], [1]], axis=0))
        y = tf.nn.convolution(y, kernel, strides=2, padding="VALID")
        y = tf.reshape(y, tf.concat([batch_and_channels, tf.shape(y)[1:-1]], axis=0))
        return tf.transpose(y, [0] + list(range(2, ndim + 2)) + [1])

    def compute_output_shape(self, input_shape):
        spatial = [None if s is None else (s + 1) // 2 for s in input_shape[1:-1]]
        return (input_shape[0], *spatial, input_shape[-1])


@keras.saving.register_keras_serializable(package="n2s_tf")
class ResizeBy2(keras.layers.Layer):
    """Upsample by 2 along every spatial axis: bilinear in 2D, trilinear in 3D (half-pixel centres).

    3D is two 2D resizes: (H, W) first, then D (resizing the flattened H*W axis to its own size is
    the identity).
    """

    def call(self, x):
        ndim = _spatial_rank(x.shape)
        dtype = x.dtype
        shape = tf.shape(x)
        if ndim == 2:
            y = tf.image.resize(x, 2 * shape[1:3], method="bilinear")
        else:
            n, d, h, w, c = tf.unstack(shape)
            y = tf.reshape(x, [n * d, h, w, c])
            y = tf.image.resize(y, [2 * h, 2 * w], method="bilinear")
            y = tf.reshape(y, [n, d, 4 * h * w, c])
            y = tf.image.resize(y, [2 * d, 4 * h * w], method="bilinear")
            y = tf.reshape(y, [n, 2 * d, 2 * h, 2 * w, c])
        # tf.image.resize returns float32 whatever the input; keep the layer's compute dtype.
        return tf.cast(y, dtype)

    def compute_output_shape(self, input_shape):
        spatial = [None if s is None else 2 * s for s in input_shape[1:-1]]
        return (input_shape[0], *spatial, input_shape[-1])


# Receptive field.
#
# A network is described, along one axis, by the path of layers from input to output that sees the
# widest region (the deepest path of a U-Net: skips and 1x1 shortcuts see a sub-region of it).
# Each step maps the interval [lo, hi] of pixels it outputs to the interval of pixels it reads:
#   ("conv", k)       stride-1 'same' conv or pool of size k (Keras pads (k-1)//2 before)
#   ("down", k, pad)  stride-2 window of size k starting at 2*i - pad (2x2 conv / pool: pad 0;
#                     BlurPool: k=3, pad 1)
#   ("up_transposed",) 2x2 transposed conv, stride 2: output i reads input i//2
#   ("up_linear",)    ResizeBy2: output i reads inputs floor(i/2 - 1/4) and the one after


def _read_interval(step, lo, hi):
    kind = step[0]
    if kind == "conv":
        k = step[1]
        return lo - (k - 1) // 2, hi + k // 2
    if kind == "down":
        k, pad = step[1:]
        return 2 * lo - pad, 2 * hi - pad + k - 1
    if kind == "up_transposed":
        return lo // 2, hi // 2
    if kind == "up_linear":
        return math.floor(lo / 2 - 0.25), math.floor(hi / 2 - 0.25) + 1
    raise ValueError(f"unknown receptive-field step {step!r}")


def receptive_field(path, stride):
    """Width, along one axis, of the window centred on an output pixel that holds every input
    pixel it depends on: 2 * reach + 1, where reach is the farthest dependency on either side.

    The dependency region is not centred (2x2 pools and transposed convs shift it), so the
    centred width is what tiled inference needs: ceil(width / 2) context pixels per side always
    suffice. `path` lists the steps (see above) from input to output; the region depends on where
    the output pixel sits relative to the downsampling grid, so every offset modulo `stride` is tried.
    """
    reach = 0
    for offset in range(stride):
        lo = hi = offset
        for step in reversed(path):
            lo, hi = _read_interval(step, lo, hi)
        reach = max(reach, offset - lo, hi - offset)
    return 2 * reach + 1
