"""The Python API, mirroring the command line.

    import n2s_tf
    result = n2s_tf.train(model="n2sp", steps=2000, model_dir="runs/demo")
    model = n2s_tf.load_model(result["export_dir"])       # or n2s_tf.load_model() for the shipped one
    denoised = n2s_tf.denoise(noisy, model, tta=True)      # numpy in, numpy out

Argument mistakes raise ConfigError (a ValueError) naming the argument; a missing or damaged
model folder ModelFileError, both one line (n2s_tf.errors).
"""

import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError, ImageFileError, ModelNotFoundError

# The shipped models are package data: the same path in a checkout and in an installed wheel.
SHIPPED_MODELS = Path(__file__).resolve().parent / "models"
# The shipped model test_single.py uses when --model is not given, by input kind.
DEFAULT_MODELS = {"general": "general", "cryo": "cryoem_n2n", "tomogram": "cryoet_n2n"}


def train(config: Optional[TrainConfig] = None, export: bool = True, **fields):
    """Train as train.py does; `fields` are TrainConfig fields (model=, steps=, data=, ...)."""
    from n2s_tf.run import train as run

    config = config or TrainConfig(**fields)
    return run(config, export=export)


def default_model_path(input_path: Optional[str] = None) -> str:
    """The shipped model for an input file: the Noise2Noise micrograph model for MRC files (one
    micrograph, or even/odd sums with their other halves) and the 3D Noise2Noise tomogram model
    for MRC volumes (tomograms), with or without their halves; else the general model."""
    from n2s_tf import io

    cryo = input_path is not None and input_path.lower().endswith(io.MRC_EXTENSIONS)
    kinds = ("cryo", "general") if cryo else ("general",)
    if cryo and _is_volume(input_path):
        kinds = ("tomogram",) + kinds
    for kind in kinds:
        path = SHIPPED_MODELS / DEFAULT_MODELS[kind]
        if path.exists():
            return str(path)
    raise ModelNotFoundError(f"no shipped model in {SHIPPED_MODELS}; pass --model")


def _is_volume(path) -> bool:
    """Whether an existing MRC file holds a volume, from its header; False for a missing or
    unreadable one (reading it later says what is wrong)."""
    from n2s_tf import io

    try:
        return os.path.isfile(path) and io.image_kind(path) == "volume"
    except ImageFileError:
        return False


def load_model(path=None, precision: str = "auto"):
    """An exported model (version dir, model dir or training dir), as test_single.py loads it.

    path None: the shipped model for `default_model_path()` (the general one; the command line
    passes the input file, so MRC files get the cryo-EM model). precision "auto" (the command
    line's default too): bfloat16 on CPUs with native bfloat16, else float32, the SavedModel's
    own graph; "float32" or "bfloat16" to choose (see export.LoadedModel).
    """
    from n2s_tf.export import LoadedModel

    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"model must be the path of an exported model, got {type(path).__name__} {path!r}")
    return LoadedModel(os.fspath(path) if path is not None else default_model_path(), precision=precision)


def _check_tiling(tile, max_memory) -> None:
    """tile: a positive whole number of pixels; max_memory: a positive, finite number of bytes."""
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1):
        raise ConfigError(f"tile must be a positive whole number of pixels, got {tile!r}")
    if max_memory is not None and (isinstance(max_memory, bool) or not isinstance(max_memory, numbers.Real)
                                   or not math.isfinite(max_memory) or max_memory <= 0):
        raise ConfigError(f"max_memory must be a positive number of bytes, got {max_memory!r}")


def denoise(image: np.ndarray, model=None, *, tile: Optional[int] = None, max_memory: Optional[float] = None,
            tta: bool = False, progress: bool = False, adapt_steps: int = 0,
            adapt_method: str = "n2s", calibrate="auto", whiten="auto", collaborative: bool = False) -> np.ndarray:
    """Denoise one image (H, W[, C]) or volume (D, H, W[, C]); returns float32 in the input's units.

    The image is standardized by its own mean and std, predicted in tiles with enough
    context that no seam shows, and restored to its mean and std; no clipping.
    model: a path (see `load_model`), a loaded model, or None for the shipped general model.
    tile: core tile side in pixels; else max_memory (bytes) bounds one tile's activations
    (the window with its context, at the model's bytes_per_pixel); else 1024 (2D) or 128 (3D).
    Besides the tiles, denoising holds one float32 copy of the image and the float32 output.
    NaN and Inf pixels are replaced by the median of their finite neighbours, with a
    RepairedPixelsWarning saying how many (see inference.denoise_array).
    `adapt_steps` > 0 first fine-tunes a copy of the model on this image, self-supervised.
    `calibrate`: True mixes the prediction with the image per Fourier ring, weights from the
    image itself (`n2s_tf.calibration`; twice the prediction time). It assumes white noise: on
    correlated noise that is not whitened it is skipped, with a warning. "auto" calibrates a
    blind-spot model (or an adapted one) where the noise verdict is white and the noise level
    the same at every brightness (`noise.homoscedastic`: not counting noise on a dark
    background); False never.
    `whiten`: True whitens the image with its own noise spectrum before all of that and
    re-colours the result (`n2s_tf.whitening`; adaptation and calibration then see white
    noise); "auto" does so for a blind-spot model (or with adaptation) when `n2s_tf.noise`
    finds the noise correlated, and always for a model trained with whiten="on"; False never.
    `collaborative`: True refines the prediction of a 2D image by collaborative filtering
    (`n2s_tf.collaborative`: block matching on the prediction finds again the repeated texture
    a network smooths away; about 4x the prediction's time on a CPU). It assumes white
    Gaussian noise of one level, measured on the image; a warning says where the noise verdict is
    correlated. Not a default: on counting noise it loses (docs/benchmarks.md).
    """
    from n2s_tf.data import all_finite
    from n2s_tf.export import LoadedModel
    from n2s_tf.inference import denoise_array, repaired_copy

    _check_tiling(tile, max_memory)
    if model is None or isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    elif not isinstance(model, LoadedModel):
        raise ConfigError(f"model must be a path or a model from n2s_tf.load_model, got {type(model).__name__}")
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise ConfigError(f"image must hold real numbers, got dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    squeeze = image.ndim == model.ndim
    if squeeze:
        image = image[..., None]
    if image.ndim != model.ndim + 1 or image.shape[-1] != model.channels:
        raise ConfigError(f"the model takes {model.ndim}D images with {model.channels} channel(s); "
                         f"got an array of shape {image.shape}")
    if not all(image.shape):
        raise ConfigError(f"image is empty: shape {image.shape}")
    for name, value in (("whiten", whiten), ("calibrate", calibrate)):
        if value not in ("auto", True, False):
            raise ConfigError(f"{name} must be 'auto', True or False, got {value!r}")
    if tile is None and max_memory is not None:
        memory = dict(max_memory=max_memory, bytes_per_pixel=model.metadata["bytes_per_pixel"])
    else:
        memory = {}

    def run(x):
        predict = model.predict_standardized
        if adapt_steps:
            from n2s_tf.adapt import adapt

            network = adapt(model.keras_network(model.precision), [x], method=adapt_method, steps=adapt_steps,
                            mixed_precision=model.precision)
            predict = lambda batch: network(batch, training=False).numpy()  # noqa: E731
        return denoise_array(predict, x, model.stride, model.receptive_field,
                             tile=tile, tta=tta, progress=progress, calibrate=calibrate, **memory)

    from n2s_tf.export import structured_blind_spot

    # Blind-spot models pass correlated noise through. The verdict is made for micrographs,
    # where noise outweighs the signal at high frequency; textured natural images can fool
    # it, and supervised models are left to what they learned (no pass over the image).
    blind = blind_spot(model, adapt_steps)
    if whiten == "auto" and (not blind or structured_blind_spot(model.metadata)):
        whiten = False
    if whiten == "auto" and model.metadata.get("config", {}).get("whiten") in (True, "on"):
        whiten = True  # trained on whitened images (train.py --whiten=on): denoise them so
    if calibrate == "auto" and (not blind or whiten is True):
        calibrate = False
    if collaborative not in (True, False):
        raise ConfigError(f"collaborative must be True or False, got {collaborative!r}")
    if collaborative and model.ndim != 2:
        raise ConfigError(f"collaborative filtering works on 2D images; this model takes {model.ndim}D ones")
    if (whiten is not False or calibrate or collaborative) and not all_finite(image):
        image = repaired_copy(image)  # the noise spectrum and the whitening need finite pixels
    from n2s_tf.noise import channel_reports, correlated_spectra, homoscedastic

    # The noise verdict of each channel, measured once; its spectra are reused by the whitening.
    reports = (channel_reports(image, model.ndim)
               if whiten == "auto" or (calibrate and not whiten) or collaborative else None)
    spectra = correlated_spectra(reports)
    if whiten == "auto":
        whiten = spectra is not None
    if calibrate == "auto":
        # A blind-spot network never sees the pixel it predicts, so it leaves unused the part of
        # the input that calibration's mix puts back; that mix takes one noise power per image:
        # noise white (a verdict, not "unknown") and of one level at every brightness.
        calibrate = (not whiten and reports is not None and all(r["verdict"] == "white" for r in reports)
                     and homoscedastic(image, model.ndim))
    elif calibrate and not whiten and spectra is not None:
        # Calibration's noise power comes from the outer rings, which only white noise makes
        # right; on correlated noise it would mix in far too much of the input.
        warnings.warn("calibration skipped: the noise is correlated and calibration assumes white noise",
                      UserWarning, stacklevel=2)
        calibrate = False
    if collaborative and spectra is not None:
        # Done all the same: sharp periodic texture (a chessboard) reads as correlated noise, and
        # that is where it is asked for.
        warnings.warn("collaborative filtering assumes white noise, and the noise verdict is correlated "
                      "(or a sharp texture reads so)", UserWarning, stacklevel=2)
    if whiten:
        from n2s_tf.whitening import denoise_whitened

        out = denoise_whitened(run, image, model.ndim, spectra)
    else:
        out = run(image)
    if collaborative and reports is not None:  # None: too small to measure the noise
        out = refine_collaboratively(image, out, reports)
    return out[..., 0] if squeeze else out


def refine_collaboratively(image, denoised, reports):
    """`n2s_tf.collaborative.refine` of each channel of a (H, W, C) image, for white noise of
    the level `noise.white_noise_level` reads in that channel's noise report."""
    from n2s_tf.collaborative import refine
    from n2s_tf.noise import white_noise_level

    return np.stack([refine(image[..., c], denoised[..., c], white_noise_level(report["spectrum"]))
                     for c, report in enumerate(reports)], axis=-1)


def denoise_halves(image_a: np.ndarray, image_b: np.ndarray, model=None, *, calibrate: bool = True,
                   **options) -> np.ndarray:
    """Denoise two halves of one exposure (even/odd frame sums, even/odd tomograms: the same
    signal, independent noise) with a Noise2Noise model and return their combination, float32:
    each half denoised (`denoise` with `options`), then `combine_halves`."""
    image_a, image_b = np.asarray(image_a), np.asarray(image_b)
    if image_a.shape != image_b.shape:
        raise ConfigError(f"the halves differ in shape: {image_a.shape} and {image_b.shape}")
    if model is None or isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    denoised = [denoise(image, model, **options) for image in (image_a, image_b)]
    return combine_halves(image_a, image_b, *denoised, ndim=model.ndim, calibrate=calibrate)


def combine_halves(image_a, image_b, denoised_a, denoised_b, ndim: int, calibrate: bool = True) -> np.ndarray:
    """The mean of two denoised halves (arrays (*spatial) or (*spatial, C), ndim spatial axes);
    with calibrate, mixed per Fourier ring with the mean of the raw halves, each channel with
    weights estimated from the halves themselves (`calibration.calibrate_halves`: no noise
    model, so correlated and anisotropic noise is handled; volumes, taken as tomograms with
    the tilt axis along Y, per shell and angle about that axis; large images block by block).
    denoised_a may be overwritten."""
    from n2s_tf.calibration import TILT_SECTORS, calibrate_halves

    if not calibrate:
        denoised_a = np.asarray(denoised_a, np.float32)
        denoised_a += denoised_b
        denoised_a *= 0.5
        return denoised_a
    arrays = [np.asarray(x, np.float32) for x in (image_a, image_b, denoised_a, denoised_b)]
    # Volumes are tomograms: their weights are fitted apart by angle about the tilt axis (Y).
    sectors = TILT_SECTORS if ndim == 3 else 1
    if arrays[0].ndim == ndim:
        return calibrate_halves(*arrays, sectors=sectors)
    return np.stack([calibrate_halves(*(x[..., c] for x in arrays), sectors=sectors)
                     for c in range(arrays[0].shape[-1])], axis=-1)


def blind_spot(model, adapt_steps: int = 0) -> bool:
    """Whether the model predicts a pixel without seeing it (a masked method, or adapted with one)."""
    from n2s_tf.config import METHODS

    method = METHODS.get(model.metadata.get("method"))
    return adapt_steps > 0 or (method is not None and method.masked)
