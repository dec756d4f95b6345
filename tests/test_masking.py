"""Tests of n2s_tf.masking: mask density and layout, seeds, and each replacement method against numpy."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from n2s_tf import masking

SEED = tf.constant([3, 7], tf.int32)


def _hand_mask(shape, positions):
    """Float32 mask of `shape` with ones at the given index tuples."""
    mask = np.zeros(shape, np.float32)
    for p in positions:
        mask[p] = 1
    return mask


def test_box_size():
    assert masking.box_size(0.005, 2) == 14  # round(sqrt(200)) as in Noise2Same
    assert masking.box_size(0.005, 3) == 6  # round(200 ** (1/3)) = round(5.85)
    assert masking.box_size(1 / 27, 3) == 3
    assert masking.box_size(0.25, 2) == 2
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            masking.box_size(bad, 2)


def test_mask_2d_one_pixel_per_box_and_fraction():
    mask = masking.stratified_mask((4, 112, 112, 2), 0.005, SEED).numpy()
    assert mask.dtype == np.float32 and mask.shape == (4, 112, 112, 2)
    assert set(np.unique(mask)) == {0.0, 1.0}
    per_box = mask.reshape(4, 8, 14, 8, 14, 2).sum(axis=(2, 4))
    np.testing.assert_array_equal(per_box, 1)
    # With boxes overhanging the edges the fraction is right in expectation.
    mask = masking.stratified_mask((4, 100, 120, 2), 0.005, SEED).numpy()
    assert abs(mask.mean() * 14**2 - 1) < 0.1


def test_mask_3d_one_voxel_per_box_and_fraction():
    mask = masking.stratified_mask((2, 28, 56, 56, 1), 0.005, SEED).numpy()
    assert abs(mask.mean() * 6**3 - 1) < 0.1
    full = mask[:, :24, :54, :54]  # the boxes that do not overhang
    per_box = full.reshape(2, 4, 6, 9, 6, 9, 6, 1).sum(axis=(2, 4, 6))
    np.testing.assert_array_equal(per_box, 1)


def test_mask_differs_between_channels_samples_and_seeds():
    mask = masking.stratified_mask((2, 56, 56, 2), 0.005, SEED).numpy()
    assert not np.array_equal(mask[0], mask[1])
    assert not np.array_equal(mask[..., 0], mask[..., 1])
    again = masking.stratified_mask((2, 56, 56, 2), 0.005, SEED).numpy()
    np.testing.assert_array_equal(mask, again)
    other = masking.stratified_mask((2, 56, 56, 2), 0.005, tf.constant([3, 8])).numpy()
    assert not np.array_equal(mask, other)


def test_apply_mask_same_seed_same_result():
    x = tf.random.stateless_normal((2, 30, 30, 1), [0, 1])
    for method in masking.MASKING_METHODS:
        a, mask_a = masking.apply_mask(x, 0.02, method, seed=SEED)
        b, mask_b = masking.apply_mask(x, 0.02, method, seed=SEED)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(mask_a.numpy(), mask_b.numpy())
        c, mask_c = masking.apply_mask(x, 0.02, method, seed=tf.constant([4, 7]))
        assert not np.array_equal(mask_a.numpy(), mask_c.numpy())


@pytest.mark.parametrize("method", masking.MASKING_METHODS)
@pytest.mark.parametrize("shape", [(2, 40, 36, 2), (1, 12, 20, 18, 1)])
def test_unmasked_entries_unchanged(method, shape):
    x = tf.random.stateless_normal(shape, [5, 6])
    x_masked, mask = masking.apply_mask(x, 0.01, method, seed=SEED)
    x, x_masked, keep = x.numpy(), x_masked.numpy(), mask.numpy() == 0
    assert x_masked.shape == x.shape and x_masked.dtype == x.dtype
    np.testing.assert_array_equal(x_masked[keep], x[keep])
    changed = np.mean(x_masked[~keep] != x[~keep])
    # "uniform" may draw the centre itself (1 in 121); the other methods always change the value.
    assert (~keep).sum() > 20 and (changed > 0.9 if method == "uniform" else changed == 1)


def test_gaussian_values_have_std_0_2():
    x = np.full((1, 100, 100, 1), 5.0, np.float32)
    values = masking.replace(x, np.ones_like(x), "gaussian", SEED).numpy()
    assert abs(values.std() - 0.2) < 0.01  # 10 000 draws: standard error of the std is 0.0014
    assert abs(values.mean()) < 0.01


def test_donut_is_mean_of_8_neighbours_with_reflect_edges():
    x = np.arange(30, dtype=np.float32).reshape(1, 5, 6, 1) ** 1.5  # not linear, so the mean is a real check
    positions = [(0, 2, 3, 0), (0, 0, 0, 0), (0, 4, 5, 0), (0, 0, 3, 0)]
    out = masking.replace(x, _hand_mask(x.shape, positions), "donut", SEED).numpy()
    padded = np.pad(x[0, ..., 0], 1, mode="reflect")  # numpy reflect: index -1 -> 1
    for _, i, j, _ in positions:
        block = padded[i : i + 3, j : j + 3]
        expected = (block.sum() - block[1, 1]) / 8
        np.testing.assert_allclose(out[0, i, j, 0], expected, rtol=1e-6)
    # Interior pixel by hand: neighbours of (2, 3) in the 6-wide grid of i ** 1.5.
    idx = [8, 9, 10, 14, 16, 20, 21, 22]
    np.testing.assert_allclose(out[0, 2, 3, 0], np.mean(np.array(idx, np.float64) ** 1.5), rtol=1e-6)


def test_donut_3d_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 7, 2)).astype(np.float32)
    x_masked, mask = masking.apply_mask(x, 0.05, "donut", seed=SEED)
    x_masked, mask = x_masked.numpy(), mask.numpy()
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (1, 1), (0, 0)], mode="reflect")
    positions = np.argwhere(mask > 0)
    assert len(positions) > 10
    for n, d, i, j, c in positions:
        block = padded[n, d : d + 3, i : i + 3, j : j + 3, c]
        expected = (block.sum() - block[1, 1, 1]) / 26
        np.testing.assert_allclose(x_masked[n, d, i, j, c], expected, rtol=1e-5, atol=1e-6)


def test_median_of_window_without_centre():
    x = np.random.default_rng(1).permutation(81).astype(np.float32).reshape(1, 9, 9, 1)
    positions = [(0, 4, 4, 0), (0, 0, 0, 0), (0, 1, 8, 0), (0, 8, 3, 0)]
    out = masking.replace(x, _hand_mask(x.shape, positions), "median", SEED, window=5).numpy()
    for _, i, j, _ in positions:
        # Window cropped to the image (neighbours outside are left out), centre removed.
        rows, cols = np.meshgrid(range(max(i - 2, 0), min(i + 3, 9)), range(max(j - 2, 0), min(j + 3, 9)),
                                 indexing="ij")
        keep = (rows != i) | (cols != j)
        expected = np.median(x[0, rows[keep], cols[keep], 0])
        assert out[0, i, j, 0] == expected


def test_median_3d_matches_numpy():
    x = np.random.default_rng(2).normal(size=(1, 4, 5, 6, 1)).astype(np.float32)
    positions = [(0, 1, 2, 3, 0), (0, 0, 0, 5, 0)]
    out = masking.replace(x, _hand_mask(x.shape, positions), "median", SEED, window=3).numpy()
    for _, d, i, j, _ in positions:
        window = [
            x[0, a, b, c, 0]
            for a, b, c in itertools.product(range(d - 1, d + 2), range(i - 1, i + 2), range(j - 1, j + 2))
            if (a, b, c) != (d, i, j) and 0 <= a < 4 and 0 <= b < 5 and 0 <= c < 6
        ]
        np.testing.assert_allclose(out[0, d, i, j, 0], np.median(window), rtol=1e-6)


def test_uniform_draws_from_whole_window_centre_included():
    # Unique values let us recover which pixel each replacement came from.
    x = np.arange(50 * 50, dtype=np.float32).reshape(1, 50, 50, 1)
    mask = np.zeros_like(x)
    mask[0, 5:45, 5:45, 0] = 1  # 1600 pixels whose 11x11 window lies inside the image
    out = masking.replace(x, mask, "uniform", SEED, window=11).numpy()
    rows, cols = np.nonzero(mask[0, ..., 0])
    source = out[0, rows, cols, 0].astype(int)
    dy, dx = source // 50 - rows, source % 50 - cols
    assert dy.min() == dx.min() == -5 and dy.max() == dx.max() == 5
    hits = np.zeros((11, 11), int)
    np.add.at(hits, (dy + 5, dx + 5), 1)
    assert hits.min() > 0  # every window pixel drawn, centre included (about 13 draws each)
    assert hits.max() < 40


def test_uniform_at_edges_stays_in_clipped_window():
    x = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
    positions = [(0, 0, 0, 0), (0, 5, 5, 0), (0, 0, 4, 0)]
    for seed in range(5):
        out = masking.replace(x, _hand_mask(x.shape, positions), "uniform", tf.constant([seed, 1]), window=3).numpy()
        for _, i, j, _ in positions:
            window = x[0, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2, 0]
            assert out[0, i, j, 0] in window


@pytest.mark.parametrize("method", masking.MASKING_METHODS)
def test_works_in_tf_function_with_unknown_shape(method):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32), tf.TensorSpec([2], tf.int64)])
    def masked(x, seed):
        return masking.apply_mask(x, 0.05, method, seed=seed)

    for shape in [(2, 24, 30, 1), (1, 17, 13, 1)]:
        x = tf.random.stateless_normal(shape, [1, 2])
        x_masked, mask = masked(x, tf.constant([9, 9], tf.int64))
        eager, eager_mask = masking.apply_mask(x, 0.05, method, seed=tf.constant([9, 9], tf.int64))
        np.testing.assert_array_equal(mask.numpy(), eager_mask.numpy())
        np.testing.assert_allclose(x_masked.numpy(), eager.numpy(), rtol=1e-6)
        assert mask.numpy().sum() > 0


def test_invalid_arguments():
    x = tf.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="gaussian, donut, uniform, median"):
        masking.apply_mask(x, method="blur", seed=SEED)
    with pytest.raises(ValueError):
        masking.replace(x, tf.zeros_like(x), "median", SEED, window=4)
    with pytest.raises(ValueError):
        masking.apply_mask(tf.zeros((8, 8, 1)), seed=SEED)


def test_compiles_with_xla():
    """All methods run under jit_compile (random draws have static shapes).

    The values need not equal the non-XLA ones: TF's stateless RNG kernels differ under XLA
    (normal draws always, integer draws for seed words outside [0, 2**31)).
    """
    x = tf.random.stateless_normal((2, 28, 28, 1), [1, 2])
    for method in masking.MASKING_METHODS:
        masked = tf.function(lambda x, seed, method=method: masking.apply_mask(x, 0.02, method, seed=seed),
                             jit_compile=True)
        x_masked, mask = (t.numpy() for t in masked(x, SEED))
        np.testing.assert_array_equal(mask.reshape(2, 4, 7, 4, 7, 1).sum(axis=(2, 4)), 1)  # box 7
        keep = mask == 0
        np.testing.assert_array_equal(x_masked[keep], x.numpy()[keep])
        assert np.mean(x_masked[~keep] != x.numpy()[~keep]) > 0.9


def test_per_sample_seeds_make_masks_independent_of_batch_split():
    from n2s_tf.masking import apply_mask_per_sample

    x = tf.random.stateless_normal((4, 28, 28, 1), seed=[1, 2])
    seeds = tf.constant([[7, i] for i in range(4)], tf.int64)
    whole_x, whole_m = apply_mask_per_sample(x, seeds, 0.02, "median")
    first_x, first_m = apply_mask_per_sample(x[:2], seeds[:2], 0.02, "median")
    second_x, second_m = apply_mask_per_sample(x[2:], seeds[2:], 0.02, "median")
    np.testing.assert_array_equal(whole_m.numpy(), np.concatenate([first_m, second_m]))
    np.testing.assert_array_equal(whole_x.numpy(), np.concatenate([first_x, second_x]))
    assert not np.array_equal(whole_m[0].numpy(), whole_m[1].numpy())
    assert whole_m.dtype == tf.float32 and 0 < whole_m.numpy().sum() < whole_m.numpy().size


def test_structured_mask_is_the_box_around_each_masked_pixel():
    # Two masked pixels in a 5 x 6 image, one at the edge; span 1 hides their 3 x 3 boxes,
    # cropped at the border; channel 1 has no masked pixel and stays empty.
    mask = _hand_mask((1, 5, 6, 2), [(0, 2, 2, 0), (0, 0, 5, 0)])
    expected = np.zeros((1, 5, 6, 2), np.float32)
    expected[0, 1:4, 1:4, 0] = 1
    expected[0, 0:2, 4:6, 0] = 1
    np.testing.assert_array_equal(masking.structured_mask(tf.constant(mask), 1).numpy(), expected)
    np.testing.assert_array_equal(masking.structured_mask(tf.constant(mask), 0).numpy(), mask)
    with pytest.raises(ValueError):
        masking.structured_mask(tf.constant(mask), -1)


@pytest.mark.parametrize("method", masking.MASKING_METHODS)
def test_span_hides_the_neighbours_and_scores_the_centres(method):
    x = tf.random.stateless_normal((2, 40, 36, 1), [5, 6]) + 10.0  # far from the N(0, 0.2^2) fill
    _, mask = masking.apply_mask(x, 0.01, method, seed=SEED)
    spanned, spanned_mask = masking.apply_mask(x, 0.01, method, seed=SEED, span=1)
    # The centres the loss scores are the same; only the pixels around them are hidden too.
    np.testing.assert_array_equal(spanned_mask.numpy(), mask.numpy())
    hidden = masking.structured_mask(mask, 1).numpy() > 0
    around = hidden & (mask.numpy() == 0)
    x, spanned = x.numpy(), spanned.numpy()
    np.testing.assert_array_equal(spanned[~hidden], x[~hidden])
    assert around.sum() > 100 and np.all(np.abs(spanned[around]) < 2)  # the fill, not the image
    if method == "donut":  # the mean of the 3 x 3 neighbours: of the fill now, not of the image
        assert np.all(np.abs(spanned[mask.numpy() > 0]) < 2)
