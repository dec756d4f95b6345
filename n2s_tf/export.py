"""SavedModels that TF Serving serves as they are, and loading them back.

Layout: `<base>/<model_name>/<version>/` (TF Serving's). Two signatures:
- `serving_default(images)`: float32 raw pixels, shape (N, H, W, C) or (N, D, H, W, C)
  of any size; standardizes each image per channel, reflect-pads to the network's
  stride, runs the network, crops and restores the input's mean and std inside the
  graph, so a client sends pixels and gets denoised pixels (output `denoised`). For a
  2D blind-spot model (metadata serving_whiten "auto") it first whitens each image whose
  noise is correlated with its own spectrum and re-colours the output, as api.denoise does
  ("on", a model trained with whiten="on": every image).
- `predict_standardized(images)`: the bare network on standardized, stride-aligned
  input; test_single.py uses it for tiled prediction of images too large for one pass.
The training metadata (n2s_tf.json) and the Keras network (network.keras, for
fine-tuning) travel in the SavedModel's assets.
"""

import json
import os
import tempfile
import zipfile

import keras
import numpy as np
import tensorflow as tf

from n2s_tf.errors import ConfigError, ModelFileError, ModelNotFoundError, one_line

METADATA_FILE = "n2s_tf.json"
NETWORK_FILE = "network.keras"
DEFAULT_MODEL_NAME = "denoiser"


def _pad_axis(x, axis: int, stride: int):
    """Pad the high end of `axis` to a multiple of stride as inference.pad_to_multiple does:
    reflect where the axis is longer than the pad, else repeat the edge."""
    size = tf.shape(x)[axis]
    pad = (-size) % stride
    i = tf.range(size + pad)
    reflect = (size - 1) - tf.abs((size - 1) - i)
    edge = tf.minimum(i, size - 1)
    return tf.gather(x, tf.where(pad < size, reflect, edge), axis=axis)


def _standardize_pad(images, stride: int, ndim: int):
    """In-graph per-image, per-channel standardization and padding to the stride."""
    axes = list(range(1, ndim + 1))
    mean = tf.reduce_mean(images, axis=axes, keepdims=True)
    std = tf.math.reduce_std(images, axis=axes, keepdims=True)
    std = tf.where(std > 0, std, tf.ones_like(std))
    x = (images - mean) / std
    for axis in axes:
        x = _pad_axis(x, axis, stride)
    return x, mean, std, tf.shape(images)


def _finite(images, ndim: int):
    """In-graph: each non-finite pixel (NaN, Inf) replaced by its image's per-channel mean of the
    finite pixels, so that one bad pixel cannot make a served output all NaN (the numpy path,
    inference.denoise_array, uses the median of the finite neighbours instead)."""
    axes = list(range(1, ndim + 1))
    finite = tf.math.is_finite(images)
    count = tf.reduce_sum(tf.cast(finite, tf.float32), axis=axes, keepdims=True)
    total = tf.reduce_sum(tf.where(finite, images, tf.zeros_like(images)), axis=axes, keepdims=True)
    return tf.where(finite, images, total / tf.maximum(count, 1.0))


class _DenoiserModule(tf.Module):
    def __init__(self, network: keras.Model, meta: dict, asset_paths):
        super().__init__()
        self.network = network
        self.assets = [tf.saved_model.Asset(p) for p in asset_paths]
        ndim, stride = meta["ndim"], meta["stride"]
        spec = tf.TensorSpec([None] * (ndim + 1) + [meta["channels"]], tf.float32, name="images")

        def denoise(images):
            x, mean, std, shape = _standardize_pad(images, stride, ndim)
            y = tf.cast(self.network(x, training=False), tf.float32)
            y = tf.slice(y, tf.zeros_like(shape), shape)
            return y * std + mean

        @tf.function(input_signature=[spec])
        def serving_default(images):
            images = _finite(images, ndim)
            if meta.get("serving_whiten") in ("auto", "on"):
                from n2s_tf.whitening import graph_denoise_whitened

                return {"denoised": graph_denoise_whitened(denoise, images, auto=meta["serving_whiten"] == "auto")}
            return {"denoised": denoise(images)}

        @tf.function(input_signature=[spec])
        def predict_standardized(images):
            return {"output": tf.cast(self.network(images, training=False), tf.float32)}

        self.serving_default = serving_default
        self.predict_standardized = predict_standardized


def with_policy(network: keras.Model, policy: str) -> keras.Model:
    """The same network and weights, rebuilt under a Keras dtype policy ("float32",
    "mixed_bfloat16", ...); the network itself when it already computes in that policy."""
    if network.dtype_policy.name == policy:
        return network
    from n2s_tf.networks.base import dtype_policy

    config = {k: v for k, v in network.get_config().items() if k not in ("name", "trainable", "dtype")}
    with dtype_policy(policy):
        rebuilt = type(network)(**config)
    rebuilt.set_weights(network.get_weights())
    return rebuilt


def export_model(network: keras.Model, meta: dict, base_dir: str,
                 model_name: str = DEFAULT_MODEL_NAME, version: int = None) -> str:
    """Write a versioned SavedModel; returns its directory. Never half-written: it is
    saved under a temporary name that TF Serving ignores, then renamed.

    The graph always computes in float32, whatever policy the network trained under: a
    bfloat16 graph is slow where the CPU emulates bfloat16, and TF Serving clients expect
    the float32 model (LoadedModel(precision="bfloat16") is the opt-in fast path)."""
    network = with_policy(network, "float32")
    model_root = os.path.join(base_dir, model_name)
    os.makedirs(model_root, exist_ok=True)
    if version is None:
        versions = [int(v) for v in os.listdir(model_root) if v.isdigit()]
        version = max(versions, default=0) + 1
    final = os.path.join(model_root, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; export versions are never overwritten")
    from n2s_tf.config import METHODS
    from n2s_tf.inference import estimate_bytes_per_pixel

    # test_single.py sizes its tiles from this and --max_memory. The serving signature of a 2D
    # blind-spot model whitens correlated noise in the graph as api.denoise does (n2s_tf.whitening).
    method = METHODS.get(meta.get("method"))
    whiten = ("auto" if meta.get("ndim") == 2 and method is not None and method.masked
              and not structured_blind_spot(meta) else "off")
    if whiten == "auto" and meta.get("config", {}).get("whiten") in (True, "on"):
        whiten = "on"  # trained on every image whitened, as api.denoise then always whitens
    # The serving graph runs the inference form of the network (batch normalization folded into
    # the convolutions); network.keras keeps the trained form for fine-tuning.
    serving_network = network.for_inference()
    meta = dict(meta, bytes_per_pixel=estimate_bytes_per_pixel(serving_network), serving_whiten=whiten)
    with tempfile.TemporaryDirectory() as staging:
        meta_path = os.path.join(staging, METADATA_FILE)
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        network_path = os.path.join(staging, NETWORK_FILE)
        network.save(network_path)
        module = _DenoiserModule(serving_network, meta, [meta_path, network_path])
        tmp = os.path.join(model_root, f".tmp-{version}-{os.getpid()}")
        tf.saved_model.save(module, tmp, signatures={
            "serving_default": module.serving_default,
            "predict_standardized": module.predict_standardized,
        })
    os.replace(tmp, final)
    return final


def structured_blind_spot(meta: dict) -> bool:
    """Whether the model trained with a structured blind spot (train.py --mask_span): it hides
    the neighbours correlated noise ties to a pixel itself, so it denoises unwhitened images."""
    return meta.get("config", {}).get("mask_span", 0) > 0


def resolve_export(path: str) -> str:
    """The SavedModel directory for a version dir, a model dir (newest version), an
    export base, or a training directory."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    for candidate in (path, os.path.join(path, DEFAULT_MODEL_NAME),
                      os.path.join(path, "export", DEFAULT_MODEL_NAME)):
        if os.path.isdir(candidate):
            versions = [v for v in os.listdir(candidate)
                        if v.isdigit() and os.path.exists(os.path.join(candidate, v, "saved_model.pb"))]
            if versions:
                return os.path.join(candidate, max(versions, key=int))
    raise ModelNotFoundError(f"no exported n2s_tf model in {path!r} (expected saved_model.pb, "
                             f"<name>/<version>/ or a training directory with export/)")


# What LoadedModel and the command line read from n2s_tf.json: positive integers, and others.
METADATA_INTEGERS = ("ndim", "channels", "stride", "receptive_field")
METADATA_OTHERS = ("method", "network", "steps", "bytes_per_pixel")


def _damaged(path: str, what: str, error: BaseException = None) -> ModelFileError:
    """The one-line error for a model folder that cannot be loaded, with the library's reason
    cut short (TensorFlow's can run to several sentences)."""
    reason = "" if error is None else one_line(error)
    reason = f" ({reason[:157]}...)" if len(reason) > 160 else f" ({reason})" if reason else ""
    return ModelFileError(f"cannot load the model in '{path}': {what}{reason}")


def read_metadata(path: str) -> dict:
    """The training metadata (assets/n2s_tf.json) of a SavedModel directory, checked for
    what prediction needs; ModelFileError naming the folder when it is missing or damaged."""
    name = f"assets/{METADATA_FILE}"
    try:
        with open(os.path.join(path, "assets", METADATA_FILE), encoding="utf-8") as f:
            meta = json.load(f)
    except OSError as error:
        raise _damaged(path, f"cannot read {name}", error) from error
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise _damaged(path, f"{name} is not valid JSON", error) from error
    if not isinstance(meta, dict):
        raise _damaged(path, f"{name} is not a JSON object")
    missing = [key for key in METADATA_INTEGERS + METADATA_OTHERS if key not in meta]
    if missing:
        raise _damaged(path, f"{name} lacks {', '.join(map(repr, missing))}")
    for key in METADATA_INTEGERS:
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _damaged(path, f"{name}: {key!r} must be a positive integer, got {value!r}")
    if meta["ndim"] not in (2, 3):
        raise _damaged(path, f"{name}: 'ndim' must be 2 or 3, got {meta['ndim']}")
    return meta


INFERENCE_PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16() -> bool:
    """Whether bfloat16 is the faster choice here: no GPU, and a CPU with AVX512-BF16 or AMX
    (on other CPUs bfloat16 is emulated and slower than float32)."""
    if tf.config.list_physical_devices("GPU"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class LoadedModel:
    """An exported model, ready for numpy prediction; see `n2s_tf.denoise`.

    precision="float32" runs the SavedModel's own graph (exactly what TF Serving runs);
    "bfloat16" rebuilds the network from its assets in its inference form (batch normalization
    folded, `for_inference`) with bfloat16 compute and float32 weights and output (faster on
    CPUs with native bfloat16 and close to float32; figures in docs/benchmarks.md);
    "auto" picks bfloat16 where `native_bfloat16()`.
    """

    def __init__(self, path: str, precision: str = "float32"):
        if precision not in INFERENCE_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
        self.path = resolve_export(path)
        self.metadata = read_metadata(self.path)
        try:
            self._module = tf.saved_model.load(self.path)
        except Exception as error:  # a damaged file fails as OSError, ValueError, IndexError, tf's OpError...
            raise _damaged(self.path, "saved_model.pb or variables/ is damaged or incomplete", error) from error
        if not hasattr(self._module, "predict_standardized"):
            raise _damaged(self.path, "not an n2s_tf export (no predict_standardized signature)")
        self.stride = int(self.metadata["stride"])
        self.receptive_field = int(self.metadata["receptive_field"])
        self.ndim = int(self.metadata["ndim"])
        self.channels = int(self.metadata["channels"])
        if precision == "auto":
            precision = "bfloat16" if native_bfloat16() else "float32"
        self.precision = precision
        self._bfloat16 = self._bfloat16_network() if precision == "bfloat16" else None

    def predict_standardized(self, batch) -> np.ndarray:
        batch = tf.convert_to_tensor(batch, tf.float32)
        if self._bfloat16 is not None:
            return self._bfloat16(batch).numpy()
        return self._module.predict_standardized(batch)["output"].numpy()

    def _bfloat16_network(self):
        network = with_policy(self.keras_network("float32").for_inference(), "mixed_bfloat16")
        return tf.function(lambda x: tf.cast(network(x, training=False), tf.float32))

    def serve(self, batch) -> np.ndarray:
        """The serving signature, exactly as TF Serving runs it."""
        return self._module.serving_default(tf.convert_to_tensor(batch, tf.float32))["denoised"].numpy()

    def keras_network(self, precision: str = "float32") -> keras.Model:
        """The trainable Keras network (for fine-tuning / adaptation); with "bfloat16" it is
        rebuilt under the mixed_bfloat16 policy: bfloat16 compute, float32 weights and output."""
        import n2s_tf.networks  # noqa: F401  registers the network classes

        name, file = f"assets/{NETWORK_FILE}", os.path.join(self.path, "assets", NETWORK_FILE)
        if not os.path.isfile(file):
            raise _damaged(self.path, f"{name} is missing")
        if not zipfile.is_zipfile(file):
            raise _damaged(self.path, f"{name} is not a Keras archive (a zip file)")
        try:
            trained = keras.saving.load_model(file, compile=False)
        except Exception as error:  # missing, not a zip, truncated, not a Keras model...
            raise _damaged(self.path, f"{name} cannot be loaded", error) from error
        return with_policy(trained, "float32" if precision == "float32" else f"mixed_{precision}")
