"""Tests of n2s_tf.networks: shapes, serialization, SavedModel export, size, receptive field."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from n2s_tf.networks import NETWORKS, build_network
from n2s_tf.networks.base import dtype_policy
from n2s_tf.networks.layers import BlurPool, ResizeBy2, receptive_field
from n2s_tf.networks.widen import copy_into_wider

# Tiny variants of every network (and of N2V2), cheap enough for a 2-core CPU.
TINY = {
    "resunet": {"base_filters": 4},
    "unet": {"base_filters": 4},
    "unet_bn": {"base_filters": 4, "batch_norm": True},
    "unet_n2v2": {"base_filters": 4, "n2v2": True},
    "unet_residual": {"base_filters": 4, "residual": True, "batch_norm": False},  # the shipped general model's layout
    "encoder_decoder": {"base_filters": 4, "blocks": 3, "kernel_sizes": [5, 3, 3]},
}


def tiny(key, ndim, channels, **overrides):
    name = "unet" if key.startswith("unet") else key
    return build_network(name, ndim=ndim, channels=channels, **dict(TINY[key], **overrides))


def random_batch(ndim, channels, size, batch=2, seed=0):
    shape = (batch,) + (size,) * ndim + (channels,)
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


# --- registry ---------------------------------------------------------------------------------


def test_registry_names():
    assert set(NETWORKS) == {"resunet", "unet", "encoder_decoder"}


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="encoder_decoder, resunet, unet"):
        build_network("vgg")


@pytest.mark.parametrize(
    "name, kwargs",
    [("unet", {"ndim": 4}), ("resunet", {"channels": 0}), ("encoder_decoder", {"kernel_sizes": [3]})],
)
def test_bad_arguments_raise(name, kwargs):
    with pytest.raises(ValueError):
        build_network(name, **kwargs)


# --- shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("channels", [1, 2])
def test_output_shape_equals_input_shape(key, ndim, channels):
    model = tiny(key, ndim, channels)
    assert (model.ndim, model.channels) == (ndim, channels)
    assert model.input_shape == (None,) + (None,) * ndim + (channels,)
    x = random_batch(ndim, channels, 16, batch=1)
    y = model(x, training=False)
    assert y.shape == x.shape
    assert y.dtype == tf.float32


def test_strides():
    assert build_network("resunet").stride == 4  # depth 3 = two downsamplings
    assert build_network("unet", depth=3, base_filters=4).stride == 8
    assert build_network("encoder_decoder", blocks=5, base_filters=4).stride == 32


# --- serialization and export -----------------------------------------------------------------


class Exported(tf.Module):
    """What an exporter does: a serving function over any batch and spatial size."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        spec = tf.TensorSpec([None] * (model.ndim + 1) + [model.channels], tf.float32)
        self.serve = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])


@pytest.mark.parametrize("key", ["resunet", "unet_n2v2", "unet_residual", "encoder_decoder"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_round_trips(key, ndim, tmp_path):
    channels = 2
    model = tiny(key, ndim, channels)
    x = random_batch(ndim, channels, 16)
    expected = model(x, training=False).numpy()

    rebuilt = type(model).from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt(x, training=False).numpy(), expected)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert (loaded.stride, loaded.receptive_field) == (model.stride, model.receptive_field)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)

    # SavedModel traced with unknown spatial size, then called on another size.
    tf.saved_model.save(Exported(model), str(tmp_path / "saved"))
    served = tf.saved_model.load(str(tmp_path / "saved"))
    other = random_batch(ndim, channels, 2 * model.stride * 3, batch=1, seed=1)[:, 8:]
    assert other.shape[1] % model.stride == 0 and other.shape[1] != other.shape[2]
    np.testing.assert_allclose(
        served.serve(tf.constant(other)).numpy(), model(other, training=False).numpy(), atol=1e-5
    )


def test_residual_unet_adds_its_input():
    """With the 1x1 head zeroed the residual U-Net is the identity; the plain one outputs 0."""
    x = random_batch(2, 2, 16)
    for residual, expected in [(True, x), (False, np.zeros_like(x))]:
        model = build_network("unet", ndim=2, channels=2, base_filters=4, residual=residual)
        head = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
        assert head.kernel.shape[:2] == (1, 1)
        for weight in head.weights:
            weight.assign(np.zeros(weight.shape))
        np.testing.assert_array_equal(model(x, training=False).numpy(), expected)


# --- inference form ---------------------------------------------------------------------------


def trained_looking(network, seed=1):
    """Random biases, BN offsets and statistics too, so that every weight matters."""
    rng = np.random.default_rng(seed)
    network.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(w.dtype) if "variance" not in v.path
                         else 1 + rng.random(w.shape).astype(w.dtype)
                         for v, w in zip(network.weights, network.get_weights())])
    return network


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("ndim", [2, 3])
def test_inference_form_computes_the_same(key, ndim):
    network = trained_looking(tiny(key, ndim, 2))
    folded = network.for_inference()
    has_bn = any(isinstance(layer, keras.layers.BatchNormalization) for layer in network.layers)
    if key.startswith("unet") and has_bn:
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
        assert folded.count_params() < network.count_params()
    else:
        assert folded is network  # nothing to fold (resunet's BN precedes a ReLU)
    x = random_batch(ndim, 2, 16)
    np.testing.assert_allclose(folded(x, training=False), network(x, training=False), rtol=1e-4, atol=1e-4)


def test_inference_form_keeps_the_dtype_policy():
    with dtype_policy("mixed_bfloat16"):
        network = trained_looking(tiny("unet", 2, 1))
    assert network.for_inference().dtype_policy.name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"


# --- widening ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("ndim", [2, 3])
def test_widened_network_computes_the_same(key, ndim):
    narrow = trained_looking(tiny(key, ndim, 2))  # so that all weights are copied
    wide = tiny(key, ndim, 2, base_filters=6)
    copy_into_wider(narrow, wide)
    assert wide.count_params() > narrow.count_params()
    x = random_batch(ndim, 2, 16)
    np.testing.assert_allclose(wide(x, training=False), narrow(x, training=False), atol=1e-4)


def test_widening_refuses_another_network():
    with pytest.raises(ValueError, match="not the same network"):
        copy_into_wider(tiny("unet", 2, 1), build_network("unet", depth=2, base_filters=6))


# --- size and precision -----------------------------------------------------------------------


def test_resunet_parameter_count():
    """The Noise2Same reference: about 5.56 M parameters in 2D grayscale.

    Hand count (weights of convs, BN gamma/beta; moving mean/variance counted separately):
    first conv 864; res(96) 165,888 + 768 BN; down 73,920; res(192) 663,552 + 1,536;
    down 295,296; res(384) 2,654,208 + 3,072; up 295,104; res(384->192) 1,069,056 + 2,304;
    up 73,824; res(192->96) 267,264 + 1,152; head 96 + 384.
    Trainable 5,563,680 rounds to the published 5.56 M (the total with BN moving statistics,
    5,568,288, rounds to 5.57 M), so the reference counted trainable weights; both are within 1 %.
    """
    model = build_network("resunet", ndim=2, channels=1)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = model.count_params()
    print(f"resunet 2D gray: trainable {trainable:,}, total {total:,}")
    assert trainable == 5_563_680
    assert total == 5_568_288
    assert abs(trainable - 5.56e6) / 5.56e6 < 0.01


@pytest.mark.parametrize("key", sorted(TINY))
def test_float32_output_under_mixed_precision(key):
    with dtype_policy("mixed_bfloat16"):
        model = tiny(key, 2, 1)
    assert model.layers[1].compute_dtype == "bfloat16"  # the body does run in bfloat16
    assert model.output.dtype == "float32"
    assert model(random_batch(2, 1, 16), training=False).dtype == tf.float32


# --- receptive field --------------------------------------------------------------------------


def test_receptive_field_steps_by_hand():
    # The value is the centred width 2 * reach + 1 (reach: farthest dependency on either side).
    assert receptive_field([("conv", 3), ("conv", 3)], 1) == 5  # reads i-2..i+2
    assert receptive_field([("conv", 2)], 1) == 3  # reads i..i+1: reach 1 on the right
    # Pooling 2x2 then a 3x3 conv, read with this helper's coordinates: offset 1 reads 0..5,
    # a reach of 4 to the right.
    assert receptive_field([("down", 2, 0), ("conv", 3)], 2) == 9
    # Blur 3 with stride 2 then a 3x3 conv: coarse pixels j-1..j+1 read fine 2j-3..2j+3;
    # output 2j+1 reaches 4 to the left.
    assert receptive_field([("down", 3, 1), ("conv", 3)], 2) == 9
    # Fine i-1..i+1 through a transposed conv read coarse (i-1)//2..(i+1)//2 -> one coarse pixel
    # (one fine step) on one side.
    assert receptive_field([("up_transposed",), ("conv", 3)], 1) == 3
    # Bilinear upsampling: output i reads floor(i/2 - 1/4) and the one after.
    assert receptive_field([("up_linear",), ("conv", 3)], 1) == 3
    assert receptive_field([("up_linear",)], 1) == 3


def probe_extents(model, size, reps=8):
    """Measured centred width (2 * reach + 1), along the first axis, of the input pixels with a
    nonzero gradient for one output pixel, for each row offset modulo the stride (union over
    `reps` random inputs)."""
    stride = model.stride
    n = stride * reps
    offsets = np.arange(n) % stride
    rows = size // 2 + offsets
    x = tf.constant(random_batch(2, 1, size, batch=n))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x, training=False)[..., 0]
        picked = tf.gather_nd(y, [[b, rows[b], size // 2] for b in range(n)])
        total = tf.reduce_sum(picked)  # samples are independent: BN uses moving statistics
    touched = np.abs(tape.gradient(total, x).numpy()).max(axis=(2, 3)) > 0
    extents = []
    for offset in range(stride):
        hit = np.flatnonzero(touched[offsets == offset].any(axis=0))
        row = size // 2 + offset
        extents.append(2 * max(row - hit[0], hit[-1] - row) + 1)
    return extents


@pytest.mark.parametrize(
    "key, expected", [("resunet", 49), ("unet", 103), ("unet_n2v2", 117), ("encoder_decoder", 59)]
)
def test_receptive_field_against_gradient_probe(key, expected):
    keras.utils.set_random_seed(0)
    model = tiny(key, 2, 1)
    assert model.receptive_field == expected
    extents = probe_extents(model, size=4 * model.stride * (expected // (2 * model.stride) + 1))
    # No input pixel outside the analytic centred window has any influence (<=), and the
    # window is reached (==), so it is not a loose bound either.
    assert max(extents) == model.receptive_field


# --- custom layers ----------------------------------------------------------------------------


def upsample_linear_1d(a, axis):
    """Reference linear x2 upsampling with half-pixel centres and clamped edges."""
    n = a.shape[axis]
    coords = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (coords - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
    return np.take(a, lo, axis) * (1 - frac) + np.take(a, hi, axis) * frac


def test_resize_by_2_known_values():
    x = np.array([0.0, 4.0, 8.0], "float32").reshape(1, 3, 1, 1)
    y = ResizeBy2()(tf.constant(np.repeat(x, 2, axis=2))).numpy()
    np.testing.assert_allclose(y[0, :, 0, 0], [0, 1, 3, 5, 7, 8])
    np.testing.assert_allclose(y[0, :, 3, 0], [0, 1, 3, 5, 7, 8])


@pytest.mark.parametrize("ndim", [2, 3])
def test_resize_by_2_is_separable_linear_upsampling(ndim):
    x = random_batch(ndim, 2, 5)[:, :3]  # unequal sizes catch swapped axes
    expected = x
    for axis in range(1, ndim + 1):
        expected = upsample_linear_1d(expected, axis)
    np.testing.assert_allclose(ResizeBy2()(tf.constant(x)).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_blur_pool_known_values(ndim):
    x = random_batch(ndim, 3, 6)
    padded = np.pad(x, [(0, 0)] + [(1, 1)] * ndim + [(0, 0)], mode="reflect")
    blurred = padded
    for axis in range(1, ndim + 1):  # [1, 2, 1] / 4 along each axis, then every second pixel
        n = padded.shape[axis] - 2
        left, mid, right = (np.take(blurred, np.arange(n) + i, axis) for i in range(3))
        blurred = (left + 2 * mid + right) / 4
    expected = blurred[(slice(None),) + (slice(None, None, 2),) * ndim]
    layer = BlurPool()
    y = layer(tf.constant(x)).numpy()
    assert y.shape == layer.compute_output_shape(x.shape) == (2,) + (3,) * ndim + (3,)
    np.testing.assert_allclose(y, expected, atol=1e-5)
