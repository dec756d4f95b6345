"""The base of every network: a functional keras.Model that remembers its constructor arguments.

Subclasses build their graph in `__init__` and hand it here with their arguments, stride and
receptive-field path; `get_config` returns exactly those arguments, so `from_config` (and
`.keras` loading) rebuilds the same network.
"""

import contextlib

import keras

from n2s_tf.networks.layers import receptive_field

KERAS_ARGS = {"trainable", "dtype"}  # what keras.Model itself may be given by from_config


class DenoisingNetwork(keras.Model):
    def __init__(self, inputs, outputs, *, name, args, stride, path, **kwargs):
        unknown = sorted(set(kwargs) - KERAS_ARGS)
        if unknown:  # Keras would silently ignore a misspelt option
            raise TypeError(f"{type(self).__name__} has no option {', '.join(unknown)}")
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._args = dict(args)
        for key, value in self._args.items():
            setattr(self, key, value)
        self.stride = stride
        self.receptive_field = receptive_field(path, stride)

    @property
    def network_args(self):
        """The options a `TrainConfig.network_args` holds for this network (ndim and channels
        are fields of their own there)."""
        return {k: v for k, v in self._args.items() if k not in ("ndim", "channels")}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._args}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def for_inference(self) -> keras.Model:
        """A network that computes what this one computes in inference, with fewer operations
        (see UNet's, which folds batch normalization into the convolutions); this one itself
        where there is nothing to simplify. Not for training: it has no batch statistics."""
        return self


@contextlib.contextmanager
def dtype_policy(name: str):
    """Build layers under the Keras dtype policy `name` ("float32", "mixed_bfloat16", ...),
    restoring the global policy afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
