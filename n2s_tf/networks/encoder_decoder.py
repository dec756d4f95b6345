"""A plain encoder-decoder without skip connections.

Encoder: `blocks` times conv(kernel_sizes[i]) -> ReLU -> 2x2 max-pool, with
min(base_filters * 2**i, MAX_FILTERS) filters. Decoder: per block, bilinear (3D: trilinear)
upsampling by 2 (`ResizeBy2`) -> 3x3 conv -> ReLU, mirroring the encoder's filters. A 1x1 conv
maps to the output channels. Without skips, all detail has to pass the bottleneck.
"""

import keras

from n2s_tf.networks import register
from n2s_tf.networks.base import DenoisingNetwork
from n2s_tf.networks.layers import ResizeBy2, network_input, spatial_layers

MAX_FILTERS = 256


@register("encoder_decoder")
@keras.saving.register_keras_serializable(package="n2s_tf")
class EncoderDecoder(DenoisingNetwork):
    """Encoder-decoder of `blocks` downsamplings; `kernel_sizes` (one per block) default to 3."""

    def __init__(
        self,
        ndim=2,
        channels=1,
        blocks=4,
        base_filters=32,
        kernel_sizes=None,
        name="encoder_decoder",
        **kwargs,
    ):
        if blocks < 1 or base_filters < 1:
            raise ValueError(f"blocks and base_filters must be >= 1, got {blocks}, {base_filters}")
        kernel_sizes = tuple(kernel_sizes) if kernel_sizes is not None else (3,) * blocks
        if len(kernel_sizes) != blocks:
            raise ValueError(f"need one kernel size per block ({blocks}), got {list(kernel_sizes)}")
        layers = spatial_layers(ndim)
        inputs = network_input(ndim, channels)
        filters = [min(base_filters * 2**i, MAX_FILTERS) for i in range(blocks)]

        x = inputs
        path = []
        for block in range(blocks):
            x = layers.conv(filters[block], kernel_sizes[block], padding="same", activation="relu")(x)
            x = layers.max_pool(2)(x)
            path += [("conv", kernel_sizes[block]), ("down", 2, 0)]
        for block in reversed(range(blocks)):
            x = ResizeBy2()(x)
            x = layers.conv(filters[block], 3, padding="same", activation="relu")(x)
            path += [("up_linear",), ("conv", 3)]
        # float32 output even under a mixed-precision policy (stable losses).
        outputs = layers.conv(channels, 1, dtype="float32")(x)

        args = dict(ndim=ndim, channels=channels, blocks=blocks, base_filters=base_filters,
                    kernel_sizes=list(kernel_sizes))
        super().__init__(inputs, outputs, name=name, args=args,
                         stride=2**blocks, path=path, **kwargs)
