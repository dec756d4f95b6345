"""Copy a trained network into a wider one of the same kind without changing what it computes.

Net2Net-style growth (Chen et al. 2016) without its duplicated filters, whose copies would get
the same gradients: every layer keeps its trained filters as its first ones, each new filter
keeps its random initialization, and the weights from new channels into trained filters are
zero. The new filters thus leave the output unchanged at first, training grows them from there,
and the grown network starts at the trained one's quality instead of from scratch. Used by
`train.py --init` when the flags ask for more `base_filters` than the exported model has, or
neighbourhood-attention blocks it lacks (they start as the identity: `NeighbourhoodAttention`).
"""

import keras
import numpy as np

from n2s_tf.networks.neighbourhood_attention import NeighbourhoodAttention

_CONV = (keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_TRANSPOSE = (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def copy_into_wider(narrow: keras.Model, wide: keras.Model) -> None:
    """Set the weights of `wide` from `narrow`, a functional network built by the same code
    with fewer (or as many) filters per layer, and perhaps neighbourhood-attention blocks that
    `narrow` lacks; `wide` then computes what `narrow` computes.
    Raises ValueError when the two are not the same graph of layers."""
    added = sum(isinstance(layer, NeighbourhoodAttention) for layer in wide.layers) - sum(
        isinstance(layer, NeighbourhoodAttention) for layer in narrow.layers)
    if len(narrow.layers) + max(added, 0) != len(wide.layers):
        raise ValueError(f"{len(narrow.layers)} layers against {len(wide.layers)}: not the same network")
    trained = {}  # id of a tensor of `wide` -> boolean mask of its channels that are narrow's
    smalls = iter(narrow.layers)
    for large in wide.layers:
        if added > 0 and isinstance(large, NeighbourhoodAttention):
            # A new block: its output projection is zero, so it passes its input through.
            trained[id(large.output)] = trained[id(large.input)]
            added -= 1
            continue
        small = next(smalls)
        if type(small) is not type(large):
            raise ValueError(f"layer {large.name}: {type(small).__name__} against {type(large).__name__}")
        if isinstance(large, keras.layers.InputLayer):
            mask = np.ones(large.output.shape[-1], bool)
        else:
            inputs = [trained[id(t)] for t in keras.tree.flatten(large.input)]
            if isinstance(large, keras.layers.Concatenate):
                mask = np.concatenate(inputs)
            elif isinstance(large, _CONV + _CONV_TRANSPOSE + (keras.layers.BatchNormalization,)):
                mask = _copy_layer(small, large, inputs[0])
            elif isinstance(large, NeighbourhoodAttention):
                mask = _copy_attention(small, large, inputs[0])
            elif small.weights:
                raise ValueError(f"layer {large.name}: cannot widen a {type(large).__name__}")
            else:  # channel-wise layers (activation, pooling, resizing, Add of equal layouts)
                mask = inputs[0]
        trained[id(large.output)] = mask


def _copy_layer(small, large, trained_in):
    """Copy one layer's weights; return the mask of its trained output channels."""
    old, new = small.get_weights(), [w.copy() for w in large.get_weights()]
    if isinstance(large, keras.layers.BatchNormalization):  # per-channel vectors only
        for o, n in zip(old, new):
            n[trained_in] = o
        large.set_weights(new)
        return trained_in
    # Kernels are (*window, in, out), transposed convolutions' (*window, out, in).
    transpose = isinstance(large, _CONV_TRANSPOSE)
    old_kernel = np.swapaxes(old[0], -1, -2) if transpose else old[0]
    kernel = np.swapaxes(new[0], -1, -2) if transpose else new[0]
    trained_out = np.zeros(kernel.shape[-1], bool)
    trained_out[: old_kernel.shape[-1]] = True
    block = kernel[..., trained_out]
    block[..., trained_in, :] = old_kernel
    block[..., ~trained_in, :] = 0.0  # new channels do not reach the trained filters
    kernel[..., trained_out] = block
    new[0] = np.swapaxes(kernel, -1, -2) if transpose else kernel
    if len(new) > 1:  # bias
        new[1][trained_out] = old[1]
    large.set_weights(new)
    return trained_out


def _copy_attention(small, large, trained_in):
    """Copy a neighbourhood-attention block: new channels neither enter its queries, keys and
    values nor receive its output (zero rows and columns), so they pass through it unchanged."""
    query, key, value, out = (np.zeros_like(w) for w in large.get_weights())
    old = small.get_weights()
    for new, trained in zip((query, key, value), old[:3]):
        new[trained_in] = trained
    out[:, trained_in] = old[3]
    large.set_weights([query, key, value, out])
    return trained_in
