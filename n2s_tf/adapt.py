"""Test-time adaptation: a few self-supervised steps on the very image to be denoised.

Its errors name the arguments of `n2s_tf.denoise` (adapt_steps, adapt_method), the only
caller, not the training flags of the config it builds.
"""

import numbers

import keras

from n2s_tf import data as data_lib
from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError
from n2s_tf.methods import METHODS
from n2s_tf.training import Denoiser, make_optimizer


def adapt(network: keras.Model, images, *, method: str = "n2s", steps: int = 200, lr: float = 1e-4,
          batch_size: int = 16, patch: int = 64, seed: int = 0, mixed_precision: str = "float32") -> keras.Model:
    """Self-supervised fine-tuning of a trained network on the very images it will denoise.

    A pretrained model has learned one relative noise level and one kind of content; a few
    hundred masked steps on the user's own image adapt it to both (no peer does this). Runs
    on the current device, without checkpoints; the network's weights are updated in place.
    mixed_precision must match the policy the network was built under.
    """
    _check_arguments(network, method, steps)
    spatial = [min(s.shape[:-1]) for s in images]
    side = min(patch, min(spatial)) // network.stride * network.stride
    if side < network.stride:
        raise ConfigError(f"an image smaller than {network.stride} pixels cannot be adapted to")
    # The network's own args, so that validate() refuses a masked method on a residual network.
    config = TrainConfig(model=method, steps=steps, pro_steps=steps // 4, network=network.name,
                         network_args=network.network_args, ndim=network.ndim,
                         patch_size=(side,) * network.ndim, batch_size=batch_size, lr=lr, seed=seed,
                         mixed_precision=mixed_precision).validate(stride=network.stride)
    inputs = [data_lib.standardize(image)[0] for image in images]
    for x in inputs:  # NaN/Inf pixels: repaired as inference.denoise_array repairs them, not trained on
        data_lib.repair_nonfinite(x)
    model = Denoiser(network, config)
    model.compile(optimizer=make_optimizer(config), jit_compile=config.jit_compile)  # not Keras' 'auto' (XLA)
    dataset = data_lib.patch_dataset(inputs, patch_size=config.patch_size, batch_size=batch_size, seed=seed)
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return network


def _check_arguments(network, method, steps):
    self_supervised = [name for name, row in METHODS.items() if row.target is None]
    if method not in self_supervised:
        raise ConfigError(f"adapt_method={method!r} is not one of: {', '.join(self_supervised)} "
                          f"(adaptation is self-supervised)")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ConfigError(f"adapt_steps must be a whole number of steps >= 1 (0 for no adaptation), got {steps!r}")
    if network.network_args.get("residual"):
        raise ConfigError(f"adapt_method={method!r} masks pixels, and this residual network (residual=true) "
                          f"adds its input to its output, so it would pass them through: it cannot be adapted")
