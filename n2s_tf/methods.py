"""The table of methods: what each one feeds the network and which loss it minimizes.

A method is one `Method` row. The trainer (`training.Denoiser`) reads only the row: which
forward passes to run (`passes`), which loss to call with their outputs (`objective`) and
which parts of it to log (`parts`). Adding a method is adding a row here and, if it needs
one, a pure loss function in `losses.py`.

Every objective takes the same keyword arguments, so the trainer calls them all alike:
    x, target: the network's input and the method's target (None when self-supervised)
    y = f(x), y_masked = f(x_masked), mask (None where the method does not compute them)
    lmbd: the Noise2Same invariance weight; learned: True (a bool tensor) once the noise
    level is learned from the data (Noise2SamePro's last steps); all_reduce: see losses.py
and returns (loss, parts).

This module is imported by the configuration and the flags, which must not pull in
TensorFlow: the objectives import the losses (and TensorFlow) when they are first called.
"""

import dataclasses
from typing import Callable, Optional


def _n2s(*, x, y, y_masked, mask, lmbd, all_reduce, **_):
    from n2s_tf import losses

    return losses.n2s_loss(x, y, y_masked, mask, lmbd=lmbd, all_reduce=all_reduce)


def _n2sp(*, x, y, y_masked, mask, lmbd, learned, all_reduce, **_):
    """Noise2Same until `learned`, then Noise2SamePro: the same weights and optimizer state
    go on with the noise level estimated from the batch instead of the fixed lmbd."""
    import tensorflow as tf

    from n2s_tf import losses

    fixed, fixed_parts = losses.n2s_loss(x, y, y_masked, mask, lmbd=lmbd, all_reduce=all_reduce)
    pro, pro_parts = losses.n2sp_loss(x, y, y_masked, mask, all_reduce=all_reduce)
    sigma = tf.where(learned, pro_parts["sigma"], tf.sqrt(fixed_parts["rec"]))
    return tf.where(learned, pro, fixed), dict(fixed_parts, sigma=sigma)


def _blind_spot_mse(*, x, y_masked, mask, all_reduce, **_):
    from n2s_tf import losses

    return losses.masked_mse(x, y_masked, mask, all_reduce=all_reduce)


def _mse(*, target, y, all_reduce, **_):
    from n2s_tf import losses

    return losses.mse(target, y, all_reduce=all_reduce)


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    # "plain": f(x); "masked": f(x_masked); "both": f(x) and f(x_masked) in one doubled batch.
    passes: str
    objective: Callable
    parts: tuple  # the loss parts logged besides the loss itself
    target: Optional[str] = None  # None (self-supervised), "noisy" (N2N) or "clean" (N2T)
    default_masking: str = "gaussian"
    learns_noise_level: bool = False  # the last pro_steps steps use the learned noise level
    description: str = ""

    @property
    def masked(self) -> bool:
        """Trains on a blind-spot masked copy of the input."""
        return self.passes != "plain"


METHODS = {
    m.name: m
    for m in [
        Method("n2s", "both", _n2s, ("rec", "inv"),
               description="Noise2Same: self-supervised, invariance term weighted by lambda."),
        Method("n2sp", "both", _n2sp, ("rec", "inv", "sigma"), learns_noise_level=True,
               description="Noise2SamePro: Noise2Same whose noise level is learned from the data "
                           "during the last --pro_steps steps."),
        Method("n2v", "masked", _blind_spot_mse, (), default_masking="uniform",
               description="Noise2Void: masked MSE on blind-spot pixels."),
        Method("n2v2", "masked", _blind_spot_mse, (), default_masking="median",
               description="N2V2: Noise2Void with median replacement; use --network=unet "
                           "(blur-pool, no top skip) to avoid checkerboard artefacts."),
        Method("n2n", "plain", _mse, (), target="noisy",
               description="Noise2Noise: MSE against a second noisy observation (even/odd halves)."),
        Method("n2t", "plain", _mse, (), target="clean",
               description="Noise2True: supervised MSE against clean targets."),
    ]
}
