"""Tests of the SavedModel export: signatures, versioning, and that TF Serving's graph
(run in a process that never imports n2s_tf) gives what test_single.py's tiled
prediction gives."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from n2s_tf.export import LoadedModel, export_model, resolve_export
from n2s_tf.inference import denoise_array
from n2s_tf.networks import build_network

SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
QUIET_TF = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def tiny_network(ndim, seed=0):
    """The smallest U-Net, with random BatchNorm statistics: its biases make it neither
    offset- nor scale-equivariant, so only the in-graph standardization can make it so."""
    keras.utils.set_random_seed(seed)
    network = build_network("unet", ndim=ndim, channels=1, depth=1, base_filters=2, batch_norm=True)
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.5, 2.0, n)])
    return network


def meta_for(network):
    return {"ndim": network.ndim, "channels": 1, "stride": network.stride,
            "receptive_field": network.receptive_field, "method": "n2s", "network": "unet", "steps": 0}


@pytest.fixture(scope="module")
def network_2d():
    return tiny_network(2)


@pytest.fixture(scope="module")
def export_2d(network_2d, tmp_path_factory):
    return export_model(network_2d, meta_for(network_2d), str(tmp_path_factory.mktemp("export")))


def test_saved_model_cli_shows_the_serving_signature(export_2d):
    shown = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", export_2d, "--all"], env=QUIET_TF,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    serving = shown.split("signature_def['serving_default']:")[1].split("signature_def[")[0]
    assert re.search(r"inputs\['images'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, -1, -1, 1\)", serving)
    assert re.search(r"outputs\['denoised'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, -1, -1, 1\)", serving)
    assert "Method name is: tensorflow/serving/predict" in serving
    assert "signature_def['predict_standardized']" in shown


def test_versions_count_up_and_are_never_overwritten(network_2d, tmp_path):
    meta = meta_for(network_2d)
    first = export_model(network_2d, meta, str(tmp_path))
    second = export_model(network_2d, meta, str(tmp_path))
    model_dir = tmp_path / "denoiser"
    assert (first, second) == (str(model_dir / "1"), str(model_dir / "2"))
    assert sorted(os.listdir(model_dir)) == ["1", "2"]  # no staging directory left behind
    assert resolve_export(str(model_dir)) == second
    assert resolve_export(str(tmp_path)) == second
    loaded_meta = LoadedModel(str(model_dir)).metadata
    assert {k: loaded_meta[k] for k in meta} == meta
    assert loaded_meta["bytes_per_pixel"] > 0  # the exporter adds it for tile sizing
    with pytest.raises(FileExistsError, match="never overwritten"):
        export_model(network_2d, meta, str(tmp_path), version=2)


# Runs in a fresh interpreter: only numpy and tensorflow, as in a serving stack.
FRESH_PROCESS = """
import sys
import numpy as np
import tensorflow as tf

export, folder = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(export)
serve = loaded.signatures["serving_default"]
for name in ("small", "large"):
    image = np.load(f"{folder}/{name}.npy")
    out = serve(images=tf.constant(image[None, ..., None]))["denoised"].numpy()
    np.save(f"{folder}/{name}_served.npy", out[0, ..., 0])
assert "n2s_tf" not in sys.modules, "serving the export imported n2s_tf"
"""


def test_serving_signature_in_a_fresh_process_equals_tiled_prediction(export_2d, tmp_path):
    rng = np.random.default_rng(1)
    images = {"small": (333, 517, 128), "large": (2000, 3000, 1024)}  # name: height, width, tile
    for name, (h, w, _) in images.items():
        ramp = np.linspace(0, 50, w, dtype=np.float32)
        np.save(tmp_path / f"{name}.npy", (300 + ramp + rng.normal(0, 20, (h, w))).astype(np.float32))
    # The fresh process runs while this one computes the tiled reference.
    fresh = subprocess.Popen([sys.executable, "-c", FRESH_PROCESS, export_2d, str(tmp_path)], cwd=tmp_path,
                             env=QUIET_TF, stderr=subprocess.PIPE, text=True)
    loaded = LoadedModel(export_2d)
    references = {
        name: denoise_array(loaded.predict_standardized, np.load(tmp_path / f"{name}.npy")[..., None],
                            loaded.stride, loaded.receptive_field, tile=tile)[..., 0]
        for name, (_, _, tile) in images.items()
    }
    _, stderr = fresh.communicate(timeout=120)
    assert fresh.returncode == 0, stderr[-2000:]
    for name, reference in references.items():
        image = np.load(tmp_path / f"{name}.npy")
        served = np.load(tmp_path / f"{name}_served.npy")
        assert served.shape == image.shape
        assert np.abs(served - reference).max() / image.std() < 1e-4, name


def test_serving_standardizes_inside_the_graph(export_2d):
    rng = np.random.default_rng(2)
    image = rng.normal(0, 10, (1, 37, 45, 1)).astype(np.float32)
    model = LoadedModel(export_2d)
    out = model.serve(image)
    tolerance = 1e-4 * np.abs(out).max()  # float32 holds x + 1000 to about 6e-5
    np.testing.assert_allclose(model.serve(image + 1000) - 1000, out, atol=tolerance)
    np.testing.assert_allclose(model.serve(image * 10), out * 10, atol=10 * tolerance)
    # Without standardization this network is neither: its BatchNorm shifts do not scale.
    raw = model.predict_standardized(image[:, :36, :44])
    assert np.abs(model.predict_standardized(image[:, :36, :44] * 10) - 10 * raw).max() > 100 * tolerance


def test_3d_export_serves_volumes_of_any_size(tmp_path):
    network = tiny_network(3)
    model = LoadedModel(export_model(network, meta_for(network), str(tmp_path)))
    volume = np.random.default_rng(3).normal(5, 2, (1, 5, 7, 9, 1)).astype(np.float32)
    out = model.serve(volume)
    assert out.shape == volume.shape
    reference = denoise_array(model.predict_standardized, volume[0], model.stride, model.receptive_field)
    assert np.abs(out[0] - reference).max() / volume.std() < 1e-4


def test_serving_pads_tiny_images_like_numpy(tmp_path):
    """Axes shorter than the pad are edge-padded in the graph exactly as pad_to_multiple does."""
    import tensorflow as tf

    from n2s_tf.export import _pad_axis
    from n2s_tf.inference import pad_to_multiple

    for shape in [(1, 2, 3, 1), (1, 5, 9, 1), (1, 1, 7, 2)]:
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        padded = tf.constant(x)
        for axis in (1, 2):
            padded = _pad_axis(padded, axis, 4)
        np.testing.assert_array_equal(padded.numpy()[0], pad_to_multiple(x[0], 4)[0])


def test_bfloat16_inference_is_close_to_float32_but_really_bfloat16(export_2d):
    image = np.random.default_rng(3).normal(size=(1, 64, 64, 1)).astype(np.float32)
    exact = LoadedModel(export_2d).predict_standardized(image)
    fast = LoadedModel(export_2d, precision="bfloat16")
    assert fast.precision == "bfloat16"
    approx = fast.predict_standardized(image)
    assert approx.dtype == np.float32 and approx.shape == exact.shape
    error = np.sqrt(np.mean((approx - exact) ** 2)) / exact.std()
    assert 1e-5 < error < 0.05  # bfloat16 keeps 8 mantissa bits: close, but not float32-exact
    assert LoadedModel(export_2d, precision="auto").precision in ("float32", "bfloat16")


def test_files_of_one_shape_trace_the_prediction_once(export_2d):
    # A data set of thousands of micrographs of one size must not recompile per file or tile:
    # the tiles of one image share a shape, and so do those of the next image.
    import n2s_tf

    model = LoadedModel(export_2d, precision="bfloat16")
    rng = np.random.default_rng(4)
    for _ in range(3):
        n2s_tf.denoise(rng.normal(size=(100, 90)).astype(np.float32), model, tile=32, whiten=False)
    assert model._bfloat16.experimental_get_tracing_count() == 1


def test_a_network_trained_in_bfloat16_exports_a_float32_graph(network_2d, tmp_path):
    # Training under --mixed_precision=bfloat16 leaves a network that computes in bfloat16;
    # the SavedModel (what TF Serving and precision="float32" run) must still be float32.
    from n2s_tf.export import with_policy

    trained = with_policy(network_2d, "mixed_bfloat16")
    assert trained.compute_dtype == "bfloat16"
    image = np.random.default_rng(5).normal(size=(1, 64, 64, 1)).astype(np.float32)
    float32 = network_2d(image, training=False).numpy()
    bfloat16 = trained(image, training=False).numpy().astype(np.float32)
    assert np.abs(bfloat16 - float32).max() > 1e-4  # the two really differ
    served = LoadedModel(export_model(trained, meta_for(network_2d), str(tmp_path))).predict_standardized(image)
    np.testing.assert_allclose(served, float32, atol=1e-5)


def test_unknown_precision_is_a_user_error(export_2d):
    from n2s_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="precision"):
        LoadedModel(export_2d, precision="float8")


def test_bfloat16_model_adapts_in_bfloat16(export_2d):
    from n2s_tf import api

    image = np.random.default_rng(4).normal(10, 2, (64, 64)).astype(np.float32)
    model = LoadedModel(export_2d, precision="bfloat16")
    plain = api.denoise(image, model)
    adapted = api.denoise(image, model, adapt_steps=3)
    assert adapted.shape == image.shape and np.isfinite(adapted).all()
    assert np.abs(adapted - plain).max() > 1e-3  # the fine-tuned copy predicts differently
    np.testing.assert_array_equal(api.denoise(image, model), plain)  # and the loaded model is untouched
