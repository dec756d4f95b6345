"""A compact U-Net for CPUs (the Noise2Void / CSBDeep layout), optionally in its N2V2 variant.

Each level has two conv with bias -> ReLU (with `batch_norm=True`, conv -> BN -> ReLU); the
encoder downsamples by 2x2 max-pooling, the decoder upsamples by 2x2 transposed convs (these
export with unknown spatial size) and concatenates the encoder's features. A 1x1 conv maps to
the output channels. Batch normalization is off by default: without it supervised 2D training,
the 3D Noise2Noise of tomograms and the blind-spot demo all scored higher, and 3D training ran
faster (docs/benchmarks.md).

With `residual=True` the network adds its input to the 1x1 conv's output, so the body learns
the noise to remove rather than the image (DnCNN's residual learning). Only for methods that see
an unmasked input (n2t, n2n): a blind-spot network would pass the masked pixel straight through.

With `nonlocal_window=k` (2D), a neighbourhood-attention block (`NeighbourhoodAttention`) with a
k x k window follows the decoder's conv block at `nonlocal_level` (the bottleneck when that is the
depth): non-local evidence for periodic textures, starting as the identity.

N2V2 (Hoeck et al. 2022) removes the checkerboard artefacts of blind-spot training: max-blur-pool
downsampling (2x2 max-pool with stride 1, then `BlurPool`) and no skip at full resolution.
"""

import keras
import numpy as np

from n2s_tf.networks import register
from n2s_tf.networks.base import DenoisingNetwork, dtype_policy
from n2s_tf.networks.layers import BlurPool, network_input, spatial_layers
from n2s_tf.networks.neighbourhood_attention import NeighbourhoodAttention


def _conv_block(x, filters, kernel_size, batch_norm, layers):
    """Two (conv -> [BN] -> ReLU); the conv has a bias only without BN."""
    for _ in range(2):
        x = layers.conv(filters, kernel_size, padding="same", use_bias=not batch_norm)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(synchronized=True)(x)
        x = keras.layers.ReLU()(x)
    return x


@register("unet")
@keras.saving.register_keras_serializable(package="n2s_tf")
class UNet(DenoisingNetwork):
    """U-Net with `depth` downsamplings and `base_filters * 2**level` filters per level."""

    def __init__(
        self,
        ndim=2,
        channels=1,
        depth=None,
        base_filters=32,
        kernel_size=3,
        batch_norm=False,
        n2v2=False,
        residual=False,
        nonlocal_window=0,
        nonlocal_level=2,
        name="unet",
        **kwargs,
    ):
        # Three levels in 2D (a receptive field of 103 px); two in 3D, where a patch 32 deep
        # has room for two and each level costs eight times more.
        depth = (3 if ndim == 2 else 2) if depth is None else depth
        if depth < 0 or base_filters < 1 or kernel_size < 1:
            raise ValueError(
                f"need depth >= 0, base_filters >= 1, kernel_size >= 1; "
                f"got {depth}, {base_filters}, {kernel_size}"
            )
        if nonlocal_window and not (ndim == 2 and 0 <= nonlocal_level <= depth):
            raise ValueError(f"nonlocal_window needs a 2D network and 0 <= nonlocal_level <= depth ({depth}), "
                             f"got ndim {ndim}, nonlocal_level {nonlocal_level}")
        layers = spatial_layers(ndim)
        inputs = network_input(ndim, channels)
        conv_path = [("conv", kernel_size)] * 2
        down_path = [("conv", 2), ("down", 3, 1)] if n2v2 else [("down", 2, 0)]

        x = inputs
        path = []
        skips = []
        for level in range(depth):
            x = _conv_block(x, base_filters * 2**level, kernel_size, batch_norm, layers)
            skips.append(x)
            if n2v2:
                x = layers.max_pool(2, strides=1, padding="same")(x)
                x = BlurPool()(x)
            else:
                x = layers.max_pool(2)(x)
            path += conv_path + down_path
        x = _conv_block(x, base_filters * 2**depth, kernel_size, batch_norm, layers)
        path += conv_path

        def nonlocal_block(x, level):
            if nonlocal_window and level == nonlocal_level:
                path.append(("conv", nonlocal_window))  # the block reaches window // 2 pixels
                return NeighbourhoodAttention(nonlocal_window)(x)
            return x

        x = nonlocal_block(x, depth)
        for level in reversed(range(depth)):
            filters = base_filters * 2**level
            x = layers.conv_transpose(filters, 2, strides=2, padding="same")(x)
            if not (n2v2 and level == 0):
                x = keras.layers.Concatenate()([x, skips[level]])
            x = _conv_block(x, filters, kernel_size, batch_norm, layers)
            path += [("up_transposed",)] + conv_path
            x = nonlocal_block(x, level)
        # float32 output even under a mixed-precision policy (stable losses).
        outputs = layers.conv(channels, 1, dtype="float32")(x)
        if residual:
            outputs = keras.layers.Add(dtype="float32")([inputs, outputs])

        args = dict(ndim=ndim, channels=channels, depth=depth, base_filters=base_filters,
                    kernel_size=kernel_size, batch_norm=batch_norm, n2v2=n2v2, residual=residual,
                    nonlocal_window=nonlocal_window, nonlocal_level=nonlocal_level)
        super().__init__(inputs, outputs, name=name, args=args, stride=2**depth, path=path, **kwargs)

    def for_inference(self):
        """The same U-Net with each batch normalization folded into the convolution before it
        (kernel times gamma / sqrt(var + eps), bias beta - mean * that factor): what this one
        computes in inference, without the normalization's passes over every activation, which
        cost more than the convolutions in bfloat16 on CPUs. Same dtype policy as this one."""
        if not self.batch_norm:
            return self
        config = {k: v for k, v in self.get_config().items() if k != "trainable"}
        with dtype_policy(self.dtype_policy.name):
            folded = type(self)(**dict(config, batch_norm=False))
        # Both networks create their layers in the same order; in this one each conv of a
        # block is followed by its batch normalization, which the folded network lacks.
        source = [layer for layer in self.layers if layer.weights]
        target = iter(layer for layer in folded.layers if layer.weights)
        for layer, after in zip(source, source[1:] + [None]):
            if isinstance(layer, keras.layers.BatchNormalization):
                continue
            weights = [np.asarray(w) for w in layer.weights]
            if isinstance(after, keras.layers.BatchNormalization):
                gamma, beta, mean, variance = (np.asarray(w) for w in after.weights)
                scale = gamma / np.sqrt(variance + after.epsilon)
                weights = [weights[0] * scale, beta - mean * scale]
            next(target).set_weights(weights)
        return folded
