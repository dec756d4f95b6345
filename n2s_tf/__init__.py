"""n2s_tf: self-supervised image denoising (Noise2Same and friends) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"

API = ("denoise", "denoise_halves", "load_model", "train")


def __getattr__(name):
    # n2s_tf.denoise and friends load n2s_tf.api (and with it TensorFlow) on first use, so that
    # `import n2s_tf.cli...` costs nothing and the commands set TensorFlow's log level first.
    if name in API:
        from n2s_tf import api

        return getattr(api, name)
    raise AttributeError(f"module 'n2s_tf' has no attribute {name!r}")
