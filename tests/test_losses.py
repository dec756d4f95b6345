"""Tests of n2s_tf.losses against numpy formulas, the all_reduce contract, gradients and dtypes."""

import numpy as np
import pytest
import tensorflow as tf

from n2s_tf import losses

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 5, 6, 2)).astype(np.float32)
Y = RNG.normal(size=X.shape).astype(np.float32)
Y_MASKED = RNG.normal(size=X.shape).astype(np.float32)
MASK = (RNG.random(X.shape) < 0.2).astype(np.float32)


def _np_rec_inv(x, y, y_masked, mask):
    rec = np.mean((y - x) ** 2)
    inv = np.sum(mask * (y - y_masked) ** 2) / np.sum(mask)
    return rec, inv


def test_n2s_loss_matches_numpy():
    rec, inv = _np_rec_inv(X, Y, Y_MASKED, MASK)
    for lmbd in (2.0, 0.5):
        loss, parts = losses.n2s_loss(X, Y, Y_MASKED, MASK, lmbd=lmbd)
        np.testing.assert_allclose(loss.numpy(), rec + lmbd * np.sqrt(inv), rtol=1e-6)
        np.testing.assert_allclose(parts["rec"].numpy(), rec, rtol=1e-6)
        np.testing.assert_allclose(parts["inv"].numpy(), inv, rtol=1e-6)


def test_n2s_loss_tiny_by_hand():
    x = np.array([[[[0.0], [1.0]]]], np.float32)  # (1, 1, 2, 1)
    y = np.array([[[[1.0], [1.0]]]], np.float32)  # rec = (1 + 0) / 2
    y_masked = np.array([[[[1.0], [4.0]]]], np.float32)
    mask = np.array([[[[0.0], [1.0]]]], np.float32)  # inv = (1 - 4)^2 / 1 = 9
    loss, _ = losses.n2s_loss(x, y, y_masked, mask)
    assert loss.numpy() == pytest.approx(0.5 + 2 * 3)


def test_n2sp_loss_matches_numpy():
    rec, inv = _np_rec_inv(X, Y, Y_MASKED, MASK)
    loss, parts = losses.n2sp_loss(X, Y, Y_MASKED, MASK)
    np.testing.assert_allclose(loss.numpy(), rec + 2 * np.sqrt(rec) * np.sqrt(inv), rtol=1e-6)
    np.testing.assert_allclose(parts["sigma"].numpy(), np.sqrt(rec), rtol=1e-6)
    np.testing.assert_allclose(parts["inv"].numpy(), inv, rtol=1e-6)


def test_masked_mse_and_mse_match_numpy():
    loss, parts = losses.masked_mse(X, Y_MASKED, MASK)
    np.testing.assert_allclose(loss.numpy(), np.sum(MASK * (Y_MASKED - X) ** 2) / np.sum(MASK), rtol=1e-6)
    assert parts["mse"].numpy() == loss.numpy()
    loss, _ = losses.mse(X, Y)
    np.testing.assert_allclose(loss.numpy(), np.mean((Y - X) ** 2), rtol=1e-6)


def test_masked_mse_with_empty_mask_is_zero():
    loss, _ = losses.masked_mse(X, Y_MASKED, np.zeros_like(MASK))
    assert loss.numpy() == 0.0


ARGS = {
    "n2s": (X, Y, Y_MASKED, MASK),
    "n2sp": (X, Y, Y_MASKED, MASK),
    "masked_mse": (X, Y_MASKED, MASK),
    "mse": (X, Y),
}


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_all_reduce_of_two_halves_equals_full_batch(name):
    """Replica A sees the first half, replica B the second; a fake all_reduce adds B's partial sums."""
    fn = losses.LOSSES[name]
    first = [a[:2] for a in ARGS[name]]
    second = [a[2:] for a in ARGS[name]]
    sums_b = []

    def record(s):  # replica B alone, logging its partial sums in call order
        sums_b.append(s)
        return s

    fn(*second, all_reduce=record)
    pending = list(sums_b)
    loss_a, parts_a = fn(*first, all_reduce=lambda s: s + pending.pop(0))
    assert not pending and len(sums_b) >= 2  # every numerator and count went through all_reduce
    loss_full, parts_full = fn(*ARGS[name])
    np.testing.assert_allclose(loss_a.numpy(), loss_full.numpy(), rtol=1e-6)
    for key in parts_full:
        np.testing.assert_allclose(parts_a[key].numpy(), parts_full[key].numpy(), rtol=1e-6)
    # Without all_reduce the half-batch loss differs, so the test above has teeth.
    assert not np.isclose(fn(*first)[0].numpy(), loss_full.numpy(), rtol=1e-4)


@pytest.mark.parametrize("name", ["n2s", "n2sp"])
def test_gradient_finite_when_inv_is_zero(name):
    y = tf.Variable(Y)
    with tf.GradientTape() as tape:
        loss, parts = losses.LOSSES[name](X, y, y, MASK)  # y_masked == y: inv = 0
    grad = tape.gradient(loss, y).numpy()
    assert parts["inv"].numpy() == 0.0
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, 2 * (Y - X) / X.size, rtol=1e-5)  # only rec contributes
    with tf.GradientTape() as tape:  # the pitfall safe_sqrt avoids
        plain = tf.sqrt(tf.reduce_sum(tf.square(y - y)))
    assert np.all(np.isnan(tape.gradient(plain, y).numpy()))


def test_n2sp_sigma_has_no_gradient_path():
    y = tf.Variable(Y)
    with tf.GradientTape() as tape:
        loss, _ = losses.n2sp_loss(X, y, Y_MASKED, MASK)
    grad = tape.gradient(loss, y).numpy()
    rec, inv = _np_rec_inv(X, Y, Y_MASKED, MASK)
    d_rec = 2 * (Y - X) / X.size
    d_sqrt_inv = MASK * (Y - Y_MASKED) / np.sum(MASK) / np.sqrt(inv)
    # sigma = sqrt(rec) enters as a constant: d loss = d rec + 2 sigma d sqrt(inv).
    np.testing.assert_allclose(grad, d_rec + 2 * np.sqrt(rec) * d_sqrt_inv, rtol=1e-4, atol=1e-7)
    # Had sigma been differentiable, the extra term 2 sqrt(inv) d sqrt(rec) would show.
    with_sigma_path = d_rec + 2 * np.sqrt(rec) * d_sqrt_inv + 2 * np.sqrt(inv) * d_rec / (2 * np.sqrt(rec))
    assert not np.allclose(grad, with_sigma_path, rtol=1e-2)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_inputs_give_float32(name, dtype):
    low = [tf.cast(a, dtype) for a in ARGS[name]]
    loss, parts = losses.LOSSES[name](*low)
    assert loss.dtype == tf.float32 and all(p.dtype == tf.float32 for p in parts.values())
    exact = [tf.cast(a, tf.float32) for a in low]  # same rounded inputs, computed in float32
    np.testing.assert_allclose(loss.numpy(), losses.LOSSES[name](*exact)[0].numpy(), rtol=1e-6)


def test_safe_sqrt():
    v = tf.Variable([0.0, 4.0])
    with tf.GradientTape() as tape:
        s = losses.safe_sqrt(v)
    np.testing.assert_allclose(s.numpy(), [1e-6, 2.0], rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(s, v).numpy(), [0.0, 0.25])


def test_every_method_row_returns_the_parts_it_logs():
    """The trainer logs a row's `parts` from what its objective returns: they must be there,
    and n2sp must be n2s before the switch and Noise2SamePro after it."""
    import tensorflow as tf

    from n2s_tf import losses
    from n2s_tf.methods import METHODS

    rng = np.random.default_rng(1)
    x, target, y, y_masked = (tf.constant(rng.normal(size=(2, 8, 8, 1)), tf.float32) for _ in range(4))
    mask = tf.constant(rng.random((2, 8, 8, 1)) < 0.3, tf.float32)
    for method in METHODS.values():
        for learned in (False, True):
            loss, parts = method.objective(x=x, target=target, y=y, y_masked=y_masked, mask=mask, lmbd=3.0,
                                           learned=tf.constant(learned), all_reduce=None)
            assert set(method.parts) <= set(parts), method.name
            assert np.isfinite(float(loss))
    n2s, _ = losses.n2s_loss(x, y, y_masked, mask, lmbd=3.0)
    pro, _ = losses.n2sp_loss(x, y, y_masked, mask)
    for learned, expected in [(False, n2s), (True, pro)]:
        loss, _ = METHODS["n2sp"].objective(x=x, target=None, y=y, y_masked=y_masked, mask=mask, lmbd=3.0,
                                            learned=tf.constant(learned), all_reduce=None)
        assert float(loss) == pytest.approx(float(expected), rel=1e-6)
