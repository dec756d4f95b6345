"""Neighbourhood attention: non-local evidence from a bounded window (the texture lever of issue 21).

Each pixel of a 2D feature map takes a weighted mean of the features of the pixels in the
`window` x `window` neighbourhood around it, the weights a softmax of the dot products of its
query with their keys: a learned form of BM3D's grouping of similar blocks, for periodic textures
that convolutions smooth away. Pixels outside the map get no weight. The window is bounded, so
the block reaches window // 2 pixels at its level, which the network adds to its receptive field:
tiled prediction still equals whole-image prediction.

The output projection starts at zero, so a new block computes the identity: it can be added to a
trained network and grown from there (`train.py --init`, `networks.widen`).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="n2s_tf")
class NeighbourhoodAttention(keras.layers.Layer):
    """x + (softmax(q . k over the window) v) W_out, with q, k, v linear maps of x's channels."""

    def __init__(self, window=11, key_dim=16, value_dim=32, **kwargs):
        super().__init__(**kwargs)
        if window < 3 or window % 2 == 0:
            raise ValueError(f"window must be an odd number of pixels >= 3, got {window}")
        if key_dim < 1 or value_dim < 1:
            raise ValueError(f"key_dim and value_dim must be positive, got {key_dim}, {value_dim}")
        self.window, self.key_dim, self.value_dim = window, key_dim, value_dim

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"neighbourhood attention is 2D: expected (N, H, W, C), got {input_shape}")
        channels = input_shape[-1]
        self.query = self.add_weight(name="query", shape=(channels, self.key_dim), initializer="glorot_uniform")
        self.key = self.add_weight(name="key", shape=(channels, self.key_dim), initializer="glorot_uniform")
        self.value = self.add_weight(name="value", shape=(channels, self.value_dim), initializer="glorot_uniform")
        self.out = self.add_weight(name="out", shape=(self.value_dim, channels), initializer="zeros")

    def call(self, x):
        dtype = x.dtype

        def project(kernel):
            return tf.einsum("nhwc,cd->nhwd", x, tf.cast(kernel, dtype))

        query, key, value = project(self.query), project(self.key), project(self.value)
        reach = self.window // 2
        pad = [[0, 0], [reach, reach], [reach, reach], [0, 0]]
        inside = tf.ones_like(x[..., :1])

        def neighbours(t):  # (N, H, W, window**2, C): t at every offset of the window
            patches = tf.image.extract_patches(tf.pad(t, pad), sizes=[1, self.window, self.window, 1],
                                               strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="VALID")
            return tf.reshape(patches, tf.concat([tf.shape(patches)[:3], [self.window**2, t.shape[-1]]], 0))

        # Logits in float32 (a softmax over up to hundreds of terms); the mean in the compute dtype.
        logits = tf.cast(tf.einsum("nhwd,nhwkd->nhwk", query, neighbours(key)), tf.float32) * self.key_dim**-0.5
        outside = 1.0 - tf.cast(neighbours(inside)[..., 0], tf.float32)
        weights = tf.cast(tf.nn.softmax(logits - 1e9 * outside, axis=-1), dtype)
        mean = tf.einsum("nhwk,nhwkd->nhwd", weights, neighbours(value))
        return x + tf.einsum("nhwd,dc->nhwc", mean, tf.cast(self.out, dtype))

    def working_elements_per_pixel(self):
        """Values the call holds besides its output, per pixel of its input (for tile sizing):
        keys and values at every window offset, the logits, mask and weights, and q, k, v, mean."""
        return self.window**2 * (self.key_dim + self.value_dim + 3) + 2 * self.key_dim + 2 * self.value_dim

    def get_config(self):
        return {**super().get_config(), "window": self.window, "key_dim": self.key_dim,
                "value_dim": self.value_dim}

    def compute_output_shape(self, input_shape):
        return input_shape
