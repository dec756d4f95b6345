"""Blind-spot masking for self-supervised denoising, as in-graph TensorFlow ops.

A stratified mask hides one random pixel per box (per sample and channel); the hidden
pixels are then replaced so the network cannot see them (Noise2Same, Noise2Void, N2V2).
Everything works on 2D (N, H, W, C) and 3D (N, D, H, W, C) batches of any size, inside
tf.function and in a tf.distribute replica context.

Randomness is stateless: each function takes `seed`, a shape-[2] int32/int64 tensor, so
a mask is a pure function of the seed (the trainer derives it from run seed, step and
replica, and a resumed run repeats exactly).
"""

import numpy as np
import tensorflow as tf

MASKING_METHODS = ("gaussian", "donut", "uniform", "median")

GAUSSIAN_STD = 0.2  # Noise2Same default; the data is standardized to unit variance.


def box_size(fraction, ndim):
    """Side of the box holding one masked pixel: round((1 / fraction) ** (1 / ndim)).

    The d-th root keeps the masked fraction right in 3D (the references take the square
    root in any dimension, which masks far fewer voxels). 2D, 0.005 -> 14; 3D -> 6.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"mask fraction must be in (0, 1), got {fraction}")
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    return max(1, round((1.0 / fraction) ** (1.0 / ndim)))


def stratified_mask(shape, fraction, seed):
    """Float32 mask of `shape` (N, *spatial, C) with one random pixel per box per sample per channel.

    Boxes of side box_size(fraction, ndim) tile the spatial axes from index 0. A box that
    overhangs the edge draws its pixel in the full box and drops it when it falls outside,
    so every pixel has the same chance 1 / box**ndim of being masked.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    ndim = shape.shape[0] - 2
    box = box_size(fraction, ndim)
    spatial = [shape[1 + d] for d in range(ndim)]
    coarse = [(s + box - 1) // box for s in spatial]
    # offsets[d] is the position of the chosen pixel inside its box along spatial axis d.
    offsets = tf.random.stateless_uniform(
        tf.stack([ndim, shape[0], *coarse, shape[-1]]), seed, minval=0, maxval=box, dtype=tf.int32
    )
    for d in range(ndim):
        # Spread each box's offset over the pixels of the box (and crop the overhang).
        offsets = tf.gather(offsets, tf.range(spatial[d]) // box, axis=2 + d)
    # A pixel is chosen when its position inside its box equals the drawn offset on every axis.
    on_axis = [
        tf.equal(offsets[d], tf.reshape(tf.range(spatial[d]) % box, [1] * (1 + d) + [-1] + [1] * (ndim - d)))
        for d in range(ndim)
    ]
    return tf.cast(tf.reduce_all(tf.stack(on_axis), axis=0), tf.float32)


def _window_offsets(ndim, radius):
    """Offsets (K, ndim + 2) of a (2 radius + 1)^ndim window without its centre; batch and channel offsets are 0."""
    grid = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * ndim, indexing="ij"), -1).reshape(-1, ndim)
    grid = grid[np.any(grid != 0, axis=1)]
    zeros = np.zeros((len(grid), 1), np.int64)
    return tf.constant(np.concatenate([zeros, grid, zeros], axis=1), tf.int64)


def _neighbours(x, idx, offsets, edge):
    """Values of x at idx + offsets, shape (M, K), and whether each neighbour lies inside the image.

    idx: (M, rank) int64 indices of the masked entries; offsets: (K, rank) or (M, K, rank).
    edge "reflect" mirrors outside coordinates about the border pixel (numpy's "reflect":
    -1 -> 1), "clip" moves them onto the border; both then clip, for windows larger than the image.
    """
    size = tf.shape(x, out_type=tf.int64)
    coords = idx[:, None, :] + offsets
    inside = tf.reduce_all((coords >= 0) & (coords < size), axis=-1)
    if edge == "reflect":
        coords = (size - 1) - tf.abs((size - 1) - tf.abs(coords))
    coords = tf.clip_by_value(coords, 0, size - 1)
    return tf.gather_nd(x, coords), inside


def _median_inside(values, inside):
    """Median of each row of `values` over the entries where `inside` is true (numpy's median:
    mean of the two middle values)."""
    values = tf.sort(tf.where(inside, values, tf.constant(np.inf, values.dtype)), axis=-1)
    count = tf.maximum(tf.reduce_sum(tf.cast(inside, tf.int32), axis=-1), 1)
    low = tf.gather(values, (count - 1) // 2, batch_dims=1)
    high = tf.gather(values, count // 2, batch_dims=1)
    return (low + high) / 2


def replace(x, mask, method, seed, window=11):
    """Return x with the entries where mask > 0 replaced; the other entries are returned unchanged.

    method:
      "gaussian": N(0, 0.2**2) values (Noise2Same default).
      "donut":    mean of the 3x3 (3x3x3) neighbours without the centre, per channel; at the
                  image border the neighbourhood is reflected (numpy "reflect": -1 -> 1),
                  which never maps a neighbour onto the centre.
      "uniform":  a random pixel of the window^ndim neighbourhood, centre included, coordinates
                  clipped to the image (Noise2Void).
      "median":   median of the window^ndim neighbourhood without the centre (N2V2); neighbours
                  outside the image are left out (padding could copy the centre into the window).
    Only the masked entries are computed (gathered from their neighbourhood), not a full filter.
    """
    if method not in MASKING_METHODS:
        raise ValueError(f"unknown masking method {method!r}; valid: {', '.join(MASKING_METHODS)}")
    if not (isinstance(window, int) and window >= 3 and window % 2 == 1):
        raise ValueError(f"window must be an odd integer >= 3, got {window}")
    x = tf.convert_to_tensor(x)
    rank = x.shape.rank
    if rank not in (4, 5):
        raise ValueError(f"expected a batch of rank 4 (N, H, W, C) or 5 (N, D, H, W, C), got rank {rank}")
    ndim = rank - 2
    idx = tf.where(mask > 0)
    # Random draws are made for every entry and gathered at the masked ones: a draw whose
    # shape is the (data-dependent) number of masked entries cannot be compiled by XLA.
    if method == "gaussian":
        values = tf.gather_nd(GAUSSIAN_STD * tf.random.stateless_normal(tf.shape(x), seed), idx)
    elif method == "donut":
        neighbours, _ = _neighbours(x, idx, _window_offsets(ndim, 1), "reflect")
        values = tf.reduce_mean(tf.cast(neighbours, tf.float32), axis=-1)
    elif method == "median":
        neighbours, inside = _neighbours(x, idx, _window_offsets(ndim, window // 2), "clip")
        values = _median_inside(tf.cast(neighbours, tf.float32), inside)
    else:  # uniform
        radius = window // 2
        spatial_only = tf.constant([0] + [1] * ndim + [0], tf.int64)
        offsets = spatial_only * tf.random.stateless_uniform(
            tf.concat([tf.shape(x), [rank]], 0), seed, minval=-radius, maxval=radius + 1, dtype=tf.int64
        )
        values = _neighbours(x, idx, tf.gather_nd(offsets, idx)[:, None, :], "clip")[0][:, 0]
    return tf.tensor_scatter_nd_update(x, idx, tf.cast(values, x.dtype))


def structured_mask(mask, span):
    """The pixels a structured blind spot hides (structN2V): every pixel within `span` of a
    masked one along each spatial axis, a (2 span + 1)^ndim box around it, per channel.
    Correlated noise lets a network read a pixel's noise off its neighbours; hiding the
    neighbours it correlates with takes that away. span 0 is the mask itself."""
    if not (isinstance(span, int) and span >= 0):
        raise ValueError(f"span must be an integer >= 0, got {span}")
    if span == 0:
        return mask
    ndim = mask.shape.rank - 2
    return tf.nn.max_pool(mask, ksize=[2 * span + 1] * ndim, strides=1, padding="SAME")


def apply_mask(x, fraction=0.005, method="gaussian", *, seed, window=11, span=0):
    """Mask a batch x (N, *spatial, C): returns (x_masked, mask), mask float32 of x's shape.

    span > 0: the pixels within span of each masked one (`structured_mask`) are hidden too,
    with N(0, GAUSSIAN_STD^2) values: not copies of the image, which would carry the noise the
    centre correlates with. The centres are then replaced by `method` from that image, and the
    returned mask (what the loss scores) is the centres only."""
    x = tf.convert_to_tensor(x)
    mask_seed, replace_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    mask = stratified_mask(tf.shape(x), fraction, mask_seed)
    if span:
        around = structured_mask(mask, span) - mask
        x = replace(x, around, "gaussian", tf.random.experimental.stateless_fold_in(replace_seed, 1))
    return replace(x, mask, method, replace_seed, window), mask


def apply_mask_per_sample(x, seeds, fraction=0.005, method="gaussian", *, window=11, span=0):
    """apply_mask with one seed per sample (seeds: (N, 2)): a sample's mask depends only on
    its own seed, not on which other samples share its batch. The trainer seeds by global
    sample index, so splitting a batch over replicas leaves every mask unchanged."""
    x = tf.convert_to_tensor(x)

    def one(args):
        sample, seed = args
        masked, mask = apply_mask(sample[None], fraction, method, seed=seed, window=window, span=span)
        return masked[0], tf.cast(mask[0], x.dtype)

    masked, mask = tf.map_fn(one, (x, seeds), fn_output_signature=(x.dtype, x.dtype))
    return masked, tf.cast(mask, tf.float32)
