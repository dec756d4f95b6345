"""The Noise2Same reference network: a residual U-Net (divelab/Noise2Same, from GVTNets).

Layout for depth 3 (filters 96 / 192 / 384), one pre-activation residual block per level:

    3x3 conv -> res(96) ----------------------------------- concat -> res(96) -> head
                 \\ 2x2 conv s2 -> res(192) ------ concat -> up 2x2 /
                                 \\ 2x2 conv s2 -> res(384) -> up 2x2 /

A residual block is BN -> ReLU -> 3x3 conv -> BN -> ReLU -> 3x3 conv, added to the input, or to
a 1x1 conv of the first BN -> ReLU output when the channel count changes (after a concat).
The head is BN -> ReLU -> 1x1 conv. Only the down/up-sampling convs have a bias. Kernels are
Glorot-uniform (the Keras default). About 5.56 M parameters in 2D grayscale.
"""

import keras

from n2s_tf.networks import register
from n2s_tf.networks.base import DenoisingNetwork
from n2s_tf.networks.layers import network_input, spatial_layers

_RES_BLOCK_PATH = [("conv", 3), ("conv", 3)]


def _batch_norm():
    return keras.layers.BatchNormalization(momentum=0.997, epsilon=1e-5, synchronized=True)


def _res_block(x, filters, layers):
    """Pre-activation residual block with a 1x1 projection shortcut when channels change."""
    activated = keras.layers.ReLU()(_batch_norm()(x))
    if x.shape[-1] == filters:
        shortcut = x
    else:
        shortcut = layers.conv(filters, 1, padding="same", use_bias=False)(activated)
    y = layers.conv(filters, 3, padding="same", use_bias=False)(activated)
    y = keras.layers.ReLU()(_batch_norm()(y))
    y = layers.conv(filters, 3, padding="same", use_bias=False)(y)
    return keras.layers.Add()([shortcut, y])


@register("resunet")
@keras.saving.register_keras_serializable(package="n2s_tf")
class ResUNet(DenoisingNetwork):
    """Residual U-Net of `depth` levels (`depth - 1` downsamplings), filters doubling per level."""

    def __init__(self, ndim=2, channels=1, depth=3, base_filters=96, name="resunet", **kwargs):
        if depth < 1 or base_filters < 1:
            raise ValueError(f"depth and base_filters must be >= 1, got {depth}, {base_filters}")
        layers = spatial_layers(ndim)
        inputs = network_input(ndim, channels)
        filters = [base_filters * 2**level for level in range(depth)]

        x = layers.conv(filters[0], 3, padding="same", use_bias=False)(inputs)
        path = [("conv", 3)]
        skips = []
        for level in range(depth):
            if level > 0:
                skips.append(x)
                x = layers.conv(filters[level], 2, strides=2, padding="same")(x)
                path.append(("down", 2, 0))
            x = _res_block(x, filters[level], layers)
            path += _RES_BLOCK_PATH
        for level in reversed(range(depth - 1)):
            x = layers.conv_transpose(filters[level], 2, strides=2, padding="same")(x)
            x = keras.layers.Concatenate()([x, skips[level]])
            x = _res_block(x, filters[level], layers)
            path += [("up_transposed",)] + _RES_BLOCK_PATH
        x = keras.layers.ReLU()(_batch_norm()(x))
        # float32 output even under a mixed-precision policy (stable losses).
        outputs = layers.conv(channels, 1, use_bias=False, dtype="float32")(x)

        args = dict(ndim=ndim, channels=channels, depth=depth, base_filters=base_filters)
        super().__init__(inputs, outputs, name=name, args=args,
                         stride=2 ** (depth - 1), path=path, **kwargs)
