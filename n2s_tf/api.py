"""The Python API, mirroring the command line.

    import n2s_tf
    result = n2s_tf.train(model="n2sp", steps=2000, model_dir="runs/demo")
    model = n2s_tf.load_model(result["export_dir"])       # or n2s_tf.load_model() for the shipped one
    denoised = n2s_tf.denoise(noisy, model, tta=True)      # numpy in, numpy out
"""

import os
from pathlib import Path
from typing import Optional

import numpy as np

from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError

# The shipped models are package data: the same path in a checkout and in an installed wheel.
SHIPPED_MODELS = Path(__file__).resolve().parent / "models"
# The shipped model test_single.py uses when --model is not given, by input kind.
DEFAULT_MODELS = {"general": "general", "cryo": "cryoem"}
CRYO_EXTENSIONS = (".mrc", ".mrcs", ".map", ".rec", ".st", ".ali")


def train(config: Optional[TrainConfig] = None, export: bool = True, **fields):
    """Train as train.py does; `fields` are TrainConfig fields (model=, steps=, data=, ...)."""
    from n2s_tf.run import train as run

    config = config or TrainConfig(**fields)
    return run(config, export=export)


def default_model_path(input_path: Optional[str] = None) -> str:
    """The shipped model for an input file: the cryo-EM model for MRC files if shipped."""
    cryo = input_path is not None and input_path.lower().endswith(CRYO_EXTENSIONS)
    for kind in (("cryo", "general") if cryo else ("general",)):
        path = SHIPPED_MODELS / DEFAULT_MODELS[kind]
        if path.exists():
            return str(path)
    raise FileNotFoundError(f"no shipped model in {SHIPPED_MODELS}; pass --model")


def load_model(path: Optional[str] = None, precision: str = "float32"):
    """An exported model (version dir, model dir or training dir); default: the shipped one.
    precision: "float32", "bfloat16" or "auto" (see export.LoadedModel)."""
    from n2s_tf.export import LoadedModel

    return LoadedModel(path or default_model_path(), precision=precision)


def denoise(image: np.ndarray, model=None, *, tile: Optional[int] = None, max_memory: Optional[float] = None,
            tta: bool = False, progress: bool = False, adapt_steps: int = 0,
            adapt_method: str = "n2s", calibrate: bool = False) -> np.ndarray:
    """Denoise one image (H, W[, C]) or volume (D, H, W[, C]); returns float32 in the input's units.

    The image is standardized by its own mean and std, predicted in tiles with enough
    context that no seam shows, and restored to its mean and std; no clipping.
    `adapt_steps` > 0 first fine-tunes a copy of the model on this image, self-supervised.
    `calibrate` mixes the prediction with the image per Fourier ring, weights from the image
    itself (`n2s_tf.calibration`; white noise only; twice the prediction time).
    """
    from n2s_tf.inference import denoise_array

    if model is None or isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    image = np.asarray(image, dtype=np.float32)
    squeeze = image.ndim == model.ndim
    if squeeze:
        image = image[..., None]
    if image.ndim != model.ndim + 1 or image.shape[-1] != model.channels:
        raise ConfigError(f"the model takes {model.ndim}D images with {model.channels} channel(s); "
                         f"got an array of shape {image.shape}")
    predict = model.predict_standardized
    if adapt_steps:
        from n2s_tf.adapt import adapt

        network = adapt(model.keras_network(model.precision), [image], method=adapt_method, steps=adapt_steps,
                        mixed_precision=model.precision)
        predict = lambda batch: network(batch, training=False).numpy()  # noqa: E731
    if tile is None and max_memory is not None:
        memory = dict(max_memory=max_memory, bytes_per_pixel=model.metadata["bytes_per_pixel"])
    else:
        memory = {}
    out = denoise_array(predict, image, model.stride, model.receptive_field,
                        tile=tile, tta=tta, progress=progress, calibrate=calibrate, **memory)
    return out[..., 0] if squeeze else out
