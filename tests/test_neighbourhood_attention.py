"""Tests of the neighbourhood-attention block: known values, identity at start, reach, tiling,
round trip, and growing a trained U-Net with it."""

import keras
import numpy as np
import pytest
from test_networks import probe_extents, random_batch, trained_looking

from n2s_tf.inference import predict_tiled, predict_whole
from n2s_tf.networks import build_network
from n2s_tf.networks.neighbourhood_attention import NeighbourhoodAttention
from n2s_tf.networks.widen import copy_into_wider

TINY = dict(depth=2, base_filters=4, residual=True, nonlocal_window=5, nonlocal_level=1)


def attention_by_hand(x, query, key, value, out, window):
    """The block written as loops: for every pixel, a softmax over the in-image neighbours."""
    n, h, w, _ = x.shape
    reach = window // 2
    q, k, v = x @ query, x @ key, x @ value
    y = x.copy()
    for b in range(n):
        for i in range(h):
            for j in range(w):
                neighbours = [(a, c) for a in range(i - reach, i + reach + 1)
                              for c in range(j - reach, j + reach + 1) if 0 <= a < h and 0 <= c < w]
                logits = np.array([q[b, i, j] @ k[b, a, c] for a, c in neighbours]) / np.sqrt(q.shape[-1])
                weights = np.exp(logits - logits.max())
                weights /= weights.sum()
                mean = sum(wt * v[b, a, c] for wt, (a, c) in zip(weights, neighbours))
                y[b, i, j] += mean @ out
    return y


def test_known_values_against_loops():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 7, 3)).astype("float32")
    layer = NeighbourhoodAttention(window=3, key_dim=2, value_dim=4)
    layer.build(x.shape)
    weights = [rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    np.testing.assert_allclose(layer(x), attention_by_hand(x, *weights, window=3), rtol=1e-4, atol=1e-4)


def test_a_new_block_is_the_identity():
    x = random_batch(2, 5, 12)
    np.testing.assert_array_equal(NeighbourhoodAttention(window=5)(x), x)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="odd"):
        NeighbourhoodAttention(window=4)
    with pytest.raises(ValueError, match="2D"):
        build_network("unet", ndim=3, nonlocal_window=5)
    with pytest.raises(ValueError, match="nonlocal_level"):
        build_network("unet", depth=2, nonlocal_window=5, nonlocal_level=3)


def test_receptive_field_holds_the_window():
    keras.utils.set_random_seed(0)
    model = trained_looking(build_network("unet", **TINY))
    plain = build_network("unet", **dict(TINY, nonlocal_window=0))
    # The block reaches 2 pixels at level 1 (spacing 2): 4 more pixels on either side.
    assert model.receptive_field == plain.receptive_field + 2 * 4
    extents = probe_extents(model, size=4 * model.stride * (model.receptive_field // (2 * model.stride) + 1))
    assert max(extents) == model.receptive_field


def test_tiled_equals_whole():
    keras.utils.set_random_seed(1)
    model = trained_looking(build_network("unet", **TINY))
    image = np.random.default_rng(2).standard_normal((75, 61, 1)).astype("float32")

    def predict_fn(batch):
        return model(batch, training=False).numpy()

    whole = predict_whole(predict_fn, image, model.stride)
    tiled = predict_tiled(predict_fn, image, model.stride, model.receptive_field, tile=16)
    assert np.abs(tiled - whole).max() < 1e-4


def test_round_trip(tmp_path):
    model = trained_looking(build_network("unet", **TINY))
    model.save(tmp_path / "net.keras")
    loaded = keras.models.load_model(tmp_path / "net.keras")
    assert loaded.get_config() == model.get_config()
    x = random_batch(2, 1, 16)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_growing_a_trained_unet_keeps_what_it_computes():
    trained = trained_looking(build_network("unet", **dict(TINY, nonlocal_window=0)))
    grown = build_network("unet", **dict(TINY, base_filters=6))
    copy_into_wider(trained, grown)
    x = random_batch(2, 1, 16)
    np.testing.assert_allclose(grown(x), trained(x), atol=1e-4)


def test_widening_a_unet_that_has_the_block_keeps_what_it_computes():
    trained = trained_looking(build_network("unet", **TINY))
    for wide in (build_network("unet", **TINY), build_network("unet", **dict(TINY, base_filters=6))):
        copy_into_wider(trained, wide)
        x = random_batch(2, 1, 16)
        np.testing.assert_allclose(wide(x), trained(x), atol=1e-4)
