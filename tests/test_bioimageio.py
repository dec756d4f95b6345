"""bioimage.io packages: our files (test tensors are our model's prediction, the weights zip
serves as TensorFlow loads it) without the optional extra; the package as bioimageio.spec
validates it with the extra (`pip install -e '.[bioimageio]'`), and bioimageio.core's model
test when BIOIMAGEIO_CORE_PYTHON names the python of an environment that has bioimageio.core
(docs/bioimageio.md)."""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage
from test_export import meta_for, tiny_network

from n2s_tf import api
from n2s_tf.bioimageio_package import (
    FILES,
    default_test_image,
    make_test_tensors,
    spatial_sizes,
    write_package_files,
)
from n2s_tf.errors import ConfigError
from n2s_tf.export import LoadedModel, export_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    network = tiny_network(2)
    return LoadedModel(export_model(network, meta_for(network), str(tmp_path_factory.mktemp("export"))))


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 40, 150, dtype=np.float32)
    return (300 + ramp + rng.normal(0, 20, (130, 150))).astype(np.float32)


@pytest.fixture(scope="module")
def files(model, image, tmp_path_factory):
    folder = tmp_path_factory.mktemp("package")
    np.save(folder / "image.npy", image)
    return write_package_files(model, folder, str(folder / "image.npy"), test_size=99)


def test_test_output_is_our_models_prediction_of_the_test_input(model, image, files):
    test_input, test_output = np.load(files["test_input"]), np.load(files["test_output"])
    side = 99  # test_size, cut from the centre of the image; not a multiple of the stride
    assert side % model.stride and side >= spatial_sizes(model)[1]
    assert test_input.shape == test_output.shape == (1, side, side, 1)
    assert test_input.dtype == test_output.dtype == np.float32
    top, left = (130 - side) // 2, (150 - side) // 2
    np.testing.assert_array_equal(test_input[0, ..., 0], image[top:top + side, left:left + side])
    # test_single.py's tiled prediction of the same crop gives the packaged output.
    ours = api.denoise(test_input[0, ..., 0], model, tile=2 * model.stride)
    assert np.abs(test_output[0, ..., 0] - ours).max() < 1e-4 * image.std()
    assert np.abs(test_output - test_input).mean() > 0.1 * image.std()  # it really denoised


def test_weights_zip_serves_the_test_output_as_tensorflow_loads_it(files, tmp_path):
    import tensorflow as tf

    with zipfile.ZipFile(files["weights"]) as archive:
        assert "saved_model.pb" in archive.namelist()  # at the root, where the loader looks
        archive.extractall(tmp_path)
    serve = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    out = serve(images=tf.constant(np.load(files["test_input"])))["denoised"].numpy()
    np.testing.assert_allclose(out, np.load(files["test_output"]), rtol=1e-5, atol=1e-4)


def test_cover_readme_and_sample_tensors(files):
    import tifffile

    side = np.load(files["test_input"]).shape[1]
    cover = np.asarray(PILImage.open(files["cover"]))
    assert cover.shape == (side, 2 * side)  # input beside output: 2:1 as bioimage.io asks
    readme = files["documentation"].read_text()
    assert "# Validation" in readme.replace("## Validation", "# Validation")
    assert "Noise2Same" in readme and "10.48550/arXiv.2010.11971" in readme
    np.testing.assert_array_equal(tifffile.imread(files["sample_output"]), np.load(files["test_output"])[0, ..., 0])
    assert set(FILES) == set(files)


def test_test_images_that_do_not_fit_are_user_errors(model, tmp_path):
    _, minimum, _ = spatial_sizes(model)
    with pytest.raises(ConfigError, match="test_image: axis 0 has"):
        make_test_tensors(model, np.zeros((minimum - 1, 64), np.float32))
    with pytest.raises(ConfigError, match="test_image: the model takes 2D images with 1"):
        make_test_tensors(model, np.zeros((64, 64, 3), np.float32))
    volume = tiny_network(3)
    three_d = LoadedModel(export_model(volume, meta_for(volume), str(tmp_path)))
    with pytest.raises(ConfigError, match="needs its own test image"):
        default_test_image(three_d)


def test_export_cli_rejects_bad_flags_in_one_line(model, tmp_path):
    existing = tmp_path / "existing.zip"
    existing.write_bytes(b"")
    for args, words in [([f"--output={existing}"], "exists; pass --overwrite"),
                        ([f"--output={tmp_path / 'a.zip'}", "--test_size=0"], "--test_size=0 must be a positive")]:
        result = subprocess.run([sys.executable, "-m", "n2s_tf.cli.export", f"--model={model.path}", *args],
                                capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert words in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]
    assert existing.read_bytes() == b""


def test_export_without_the_extra_says_how_to_install_it(model, tmp_path, monkeypatch):
    from n2s_tf.bioimageio_package import export_bioimageio

    monkeypatch.setitem(sys.modules, "bioimageio.spec.model", None)  # as if not installed: import fails
    with pytest.raises(ConfigError, match=r"pip install 'n2s_tf\[bioimageio\]'"):
        export_bioimageio(model, tmp_path / "out.zip")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------- with the bioimageio extra installed


@pytest.fixture(scope="module")
def package(model, image, tmp_path_factory):
    pytest.importorskip("bioimageio.spec", reason="the optional extra: pip install -e '.[bioimageio]'")
    from n2s_tf.bioimageio_package import export_bioimageio

    folder = tmp_path_factory.mktemp("bioimageio")
    np.save(folder / "image.npy", image)
    return export_bioimageio(model, folder / "tiny.zip", test_image=str(folder / "image.npy"), test_size=99,
                             authors=["Ada Lovelace", "Alan Turing"])


def test_bioimageio_spec_validates_the_package(model, package):
    from bioimageio.spec import InvalidDescr, load_description

    assert sorted(os.listdir(os.path.dirname(package))) == ["image.npy", "tiny.zip"]  # no temporary left
    descr = load_description(package)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    assert descr.weights.tensorflow_saved_model_bundle is not None
    assert [a.name for a in descr.authors] == ["Ada Lovelace", "Alan Turing"]
    assert any(c.doi == "10.48550/arXiv.2010.11971" for c in descr.cite)
    halo, minimum, step = spatial_sizes(model)
    inputs, outputs = descr.inputs[0], descr.outputs[0]
    assert [str(a.id) for a in inputs.axes] == ["batch", "y", "x", "channel"]
    assert (inputs.axes[1].size.min, inputs.axes[1].size.step, outputs.axes[1].halo) == (minimum, step, halo)
    with zipfile.ZipFile(package) as archive:
        assert sorted(archive.namelist()) == sorted(["rdf.yaml", *FILES.values()])


def test_bioimageio_export_refuses_to_overwrite_and_rejects_bad_names(model, package):
    from n2s_tf.bioimageio_package import export_bioimageio

    before = os.path.getmtime(package)
    with pytest.raises(FileExistsError):
        export_bioimageio(model, package)
    with pytest.raises(ConfigError, match="bioimage.io rejects the description: name"):
        export_bioimageio(model, package, name="a/b!", overwrite=True, test_image=str(package).replace(
            "tiny.zip", "image.npy"))
    assert os.path.getmtime(package) == before


def test_bioimageio_core_passes_the_package_in_a_fresh_environment(package, tmp_path):
    python = os.environ.get("BIOIMAGEIO_CORE_PYTHON")
    if not python:
        pytest.skip("set BIOIMAGEIO_CORE_PYTHON to the python of an environment with bioimageio.core "
                    "(docs/bioimageio.md)")
    check = ("import sys; from bioimageio.core import test_model; s = test_model(sys.argv[1]); "
             "print(s.status, [(d.name, d.status) for d in s.details]); sys.exit(s.status != 'passed')")
    result = subprocess.run([python, "-c", check, str(package)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "failed" not in result.stdout.splitlines()[-1]


def test_export_cli_writes_a_valid_package(model, tmp_path):
    spec = pytest.importorskip("bioimageio.spec", reason="the optional extra: pip install -e '.[bioimageio]'")

    np.save(tmp_path / "image.npy", np.random.default_rng(1).normal(50, 5, (64, 70)).astype(np.float32))
    output = tmp_path / "cli.zip"
    result = subprocess.run([sys.executable, "-m", "n2s_tf.cli.export", "--format=bioimageio",
                             f"--model={model.path}", f"--test_image={tmp_path / 'image.npy'}", f"--output={output}",
                             "--name=tiny test denoiser", "--authors=Ada Lovelace"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    descr = spec.load_description(output)
    assert not isinstance(descr, spec.InvalidDescr) and descr.name == "tiny test denoiser"
    with zipfile.ZipFile(output) as archive, archive.open("test_input.npy") as test_input:
        np.testing.assert_array_equal(np.load(test_input)[0, ..., 0], np.load(tmp_path / "image.npy"))
