"""Loss functions of the denoising methods (Noise2Same, Noise2SamePro, Noise2Void, N2N / supervised).

Each loss returns (loss, parts): a float32 scalar and a dict of float32 scalars to log.

Distributed training must give the same update on 1 or N devices, but the Noise2Same loss
takes the sqrt of a batch mean, so averaging per-replica losses would be wrong. Each loss
therefore forms global SUMS first: `all_reduce` (a callable summing a scalar over replicas,
identity when None) is applied to every partial sum (numerators and counts) before any
division or sqrt, so every replica returns the loss of the whole global batch.
Under tf.distribute pass `lambda s: tf.distribute.get_replica_context().all_reduce("sum", s)`.
The gradient of that all_reduce is itself all-reduced, so the per-replica gradients, once
summed over N replicas, are N times the gradient of the loss: scale the loss by
1 / num_replicas_in_sync before differentiating (as Keras does for its own losses).

All math is float32: under mixed precision the predictions may be bfloat16 / float16.
"""

import tensorflow as tf


def safe_sqrt(v, eps=1e-12):
    """sqrt(max(v, eps)).

    The derivative of sqrt at 0 is infinite: when inv = 0 (e.g. f(x) == f(x_masked)) a plain
    sqrt gives inf * 0 = NaN gradients that poison the weights. Clamping at eps makes the
    gradient 0 below eps and finite (1 / (2 sqrt(eps))) at eps.
    """
    return tf.sqrt(tf.maximum(v, eps))


def _global_sum(values, all_reduce):
    """Sum of all entries of `values` (float32) over this replica, then over all replicas."""
    total = tf.reduce_sum(tf.cast(values, tf.float32))
    return total if all_reduce is None else all_reduce(total)


def _mean_sq(a, b, all_reduce):
    """Global mean of (a - b)^2 over all elements."""
    err = tf.square(tf.cast(a, tf.float32) - tf.cast(b, tf.float32))
    return _global_sum(err, all_reduce) / _global_sum(tf.size(err), all_reduce)


def _masked_mean_sq(a, b, mask, all_reduce):
    """Global mean of (a - b)^2 over the entries where mask is 1 (0 when nothing is masked)."""
    mask = tf.cast(mask, tf.float32)
    err = mask * tf.square(tf.cast(a, tf.float32) - tf.cast(b, tf.float32))
    return tf.math.divide_no_nan(_global_sum(err, all_reduce), _global_sum(mask, all_reduce))


def n2s_loss(x, y, y_masked, mask, lmbd=2.0, all_reduce=None):
    """Noise2Same: rec + lmbd * sqrt(inv).

    rec = mean over all elements of (y - x)^2, inv = sum(mask (y - y_masked)^2) / sum(mask),
    with y = f(x) and y_masked = f(x_masked). lmbd = 2 is 2 sigma for unit-variance noise.
    parts: rec, inv.
    """
    rec = _mean_sq(y, x, all_reduce)
    inv = _masked_mean_sq(y, y_masked, mask, all_reduce)
    return rec + lmbd * safe_sqrt(inv), {"rec": rec, "inv": inv}


def n2sp_loss(x, y, y_masked, mask, all_reduce=None):
    """Noise2SamePro: rec + 2 sigma_hat sqrt(inv), with sigma_hat = sqrt(rec) estimated from the batch.

    sigma_hat is a plug-in estimate of the noise level, held constant for the gradient
    (tf.stop_gradient): were it differentiable, the optimizer could lower the invariance
    penalty by shrinking rec, i.e. by fitting the noise. parts: rec, inv, sigma.
    """
    rec = _mean_sq(y, x, all_reduce)
    inv = _masked_mean_sq(y, y_masked, mask, all_reduce)
    sigma = tf.stop_gradient(safe_sqrt(rec))
    return rec + 2.0 * sigma * safe_sqrt(inv), {"rec": rec, "inv": inv, "sigma": sigma}


def masked_mse(target, y_masked, mask, all_reduce=None):
    """Noise2Void: mean of (y_masked - target)^2 over the masked entries only; target is the noisy input. parts: mse."""
    loss = _masked_mean_sq(y_masked, target, mask, all_reduce)
    return loss, {"mse": loss}


def mse(target, y, all_reduce=None):
    """Noise2Noise (target = second noisy observation) and supervised (target = clean):
    mean of (y - target)^2. parts: mse."""
    loss = _mean_sq(y, target, all_reduce)
    return loss, {"mse": loss}


LOSSES = {"n2s": n2s_loss, "n2sp": n2sp_loss, "masked_mse": masked_mse, "mse": mse}
