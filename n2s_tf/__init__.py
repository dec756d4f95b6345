"""n2s_tf: self-supervised image denoising (Noise2Same and friends) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"

from n2s_tf.api import denoise, load_model, train  # noqa: E402,F401
