"""bioimage.io model packages of exported models, for Fiji/deepImageJ, ilastik and bioimageio.core.

A package is one zip file:
- rdf.yaml: the model description, built and validated by `bioimageio.spec`;
- the SavedModel as it is, zipped: the `tensorflow_saved_model_bundle` weights. Its
  `serving_default` signature standardizes each image, pads it to the network's stride, runs
  the network and restores the input's mean and std inside the graph (see export.py), so the
  description needs no pre- or postprocessing beyond the cast to float32 that every consumer does;
- test_input.npy and test_output.npy: a crop of a test image and what our model (the same graph)
  makes of it, which a consumer reproduces to check its installation; the same two as
  sample_input.tif and sample_output.tif, for people and image viewers;
- cover.png (the test input beside its output) and README.md (what the model is, citations).

`bioimageio.spec` is an optional extra (`n2s_tf[bioimageio]`): the files are made by
`write_package_files` without it, only the description and the zip need it.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from n2s_tf.errors import ConfigError, ImageFileError
from n2s_tf.inference import context_size

EXAMPLE_IMAGE = Path(__file__).resolve().parent / "examples" / "noisy_camera.png"
# Largest test tensor side per spatial axis (the package carries it twice, input and output);
# 1 stands for the smallest valid size: a 3D network's activations at 128^3 already take gigabytes.
DEFAULT_TEST_SIZE = {2: 256, 3: 1}
INPUT_ID, OUTPUT_ID = "input", "output"
FILES = {"weights": "saved_model.zip", "test_input": "test_input.npy", "test_output": "test_output.npy",
         "sample_input": "sample_input.tif", "sample_output": "sample_output.tif", "cover": "cover.png",
         "documentation": "README.md"}

NOISE2SAME = {"text": "Xie, Wang, Ji. Noise2Same: Optimizing A Self-Supervised Bound for Image Denoising. "
                      "NeurIPS 2020 (https://arxiv.org/abs/2010.11971)",
              "doi": "10.48550/arXiv.2010.11971"}
# Cited besides Noise2Same when a model was trained with their method.
METHOD_CITATIONS = {
    "n2v": {"text": "Krull, Buchholz, Jug. Noise2Void - Learning Denoising From Single Noisy Images. CVPR 2019",
            "doi": "10.1109/CVPR.2019.00223"},
    "n2n": {"text": "Lehtinen et al. Noise2Noise: Learning Image Restoration without Clean Data. ICML 2018 "
                    "(https://arxiv.org/abs/1803.04189)",
            "doi": "10.48550/arXiv.1803.04189"},
}
METHOD_NAMES = {"n2s": "Noise2Same", "n2sp": "Noise2SamePro", "n2v": "Noise2Void", "n2n": "Noise2Noise",
                "n2t": "supervised (noisy-clean pairs)"}


def spatial_sizes(model) -> tuple:
    """(halo, minimum, step) of every spatial axis in the description.

    The halo is the context our own tiling gives each side (inference.context_size), so a
    consumer that tiles (deepImageJ, ilastik) crops as much as test_single.py does; the
    smallest input keeps one stride of core inside the two halos. Any larger size is valid
    (step 1): the graph pads to the stride itself, and consumers such as bioimageio.core
    refuse an image whose size is not min + n * step rather than pad it."""
    halo = context_size(model.receptive_field, model.stride)
    return halo, 2 * halo + model.stride, 1


def make_test_tensors(model, image: np.ndarray, test_size: int | None = None):
    """(input, output) test tensors, (1, [D,] H, W, C) float32: the centre of `image` cut to at
    most `test_size` per axis (at least the smallest valid size), and what the model's serving
    graph (exactly the packaged weights) makes of it."""
    image = np.asarray(image, np.float32)
    if image.ndim == model.ndim:
        image = image[..., None]
    if image.ndim != model.ndim + 1 or image.shape[-1] != model.channels:
        raise ConfigError(f"test_image: the model takes {model.ndim}D images with {model.channels} "
                          f"channel(s), got an array of shape {image.shape}")
    minimum = spatial_sizes(model)[1]
    limit = test_size or DEFAULT_TEST_SIZE[model.ndim]
    window = []
    for axis, size in enumerate(image.shape[:-1]):
        if size < minimum:
            raise ConfigError(f"test_image: axis {axis} has {size} pixels, the package's smallest input "
                              f"has {minimum} (twice the model's context plus its stride)")
        side = max(minimum, min(size, limit))
        start = (size - side) // 2
        window.append(slice(start, start + side))
    test_input = np.ascontiguousarray(image[tuple(window)])[None]
    return test_input, model.serve(test_input)


def default_test_image(model) -> str:
    """The shipped example image for a 2D single-channel model; other models need their own."""
    if model.ndim != 2 or model.channels != 1:
        raise ConfigError(f"test_image: a {model.ndim}D model with {model.channels} channel(s) needs its own "
                          f"test image (the shipped example is a 2D grayscale image)")
    return str(EXAMPLE_IMAGE)


def read_test_image(model, path: str) -> np.ndarray:
    """The test image as (spatial..., C): a stack of 2D images gives its first image."""
    from n2s_tf import io

    image = io.read_image(path)
    return image.data[0] if image.kind == "stack" and model.ndim == 2 else image.data


def write_package_files(model, folder, test_image: str | None = None, test_size: int | None = None,
                        name: str | None = None) -> dict:
    """Write the package's files into `folder` (the weights zip, test tensors, cover, README);
    returns {role: path} with the roles of FILES. Needs no bioimageio package."""
    import tifffile

    from n2s_tf import io

    folder = Path(folder).resolve()
    paths = {role: folder / file_name for role, file_name in FILES.items()}
    image = read_test_image(model, test_image or default_test_image(model))
    test_input, test_output = make_test_tensors(model, image, test_size)
    np.save(paths["test_input"], test_input)
    np.save(paths["test_output"], test_output)
    for role, tensor in (("sample_input", test_input), ("sample_output", test_output)):
        tifffile.imwrite(paths[role], tensor[0, ..., 0] if model.channels == 1 else tensor[0])
    # Input and output side by side (2:1 for a square crop), on one contrast scale.
    io.write_preview(paths["cover"], np.concatenate([test_input[0], test_output[0]], axis=-2))
    # The SavedModel's own files at the zip's root, where TensorFlow's loader expects saved_model.pb.
    shutil.make_archive(str(paths["weights"].with_suffix("")), "zip", root_dir=model.path)
    paths["documentation"].write_text(readme_text(model, name or default_name(model)))
    return paths


def default_name(model) -> str:
    """'n2s_tf general 2D denoiser' for the shipped general/6."""
    from n2s_tf.export import DEFAULT_MODEL_NAME

    folder = Path(model.path).parent.name if Path(model.path).name.isdigit() else Path(model.path).name
    folder = "".join(c if c.isalnum() or c in "_-" else "-" for c in folder)
    return " ".join(["n2s_tf"] + ([folder] if folder != DEFAULT_MODEL_NAME else []) + [f"{model.ndim}D denoiser"])


def _method(model) -> str:
    return str(model.metadata.get("method", "n2s"))


def citations(model) -> list:
    cites = [NOISE2SAME]
    if _method(model) in METHOD_CITATIONS:
        cites.append(METHOD_CITATIONS[_method(model)])
    return cites


def default_description(model) -> str:
    meta = model.metadata
    method = METHOD_NAMES.get(_method(model), _method(model))
    return (f"{model.ndim}D image denoiser ({method}, {meta.get('network', 'unet')} network, "
            f"{meta.get('steps', '?')} training steps) made with n2s_tf; it standardizes each image "
            f"and restores its mean and std, so it takes raw pixel values.")


def readme_text(model, name: str) -> str:
    """The package's README.md: what the model does, how it was made, how it is checked."""
    meta = model.metadata
    halo, minimum, _ = spatial_sizes(model)
    axes = "batch, z, y, x, channel" if model.ndim == 3 else "batch, y, x, channel"
    cites = "\n".join(f"- {c['text']}. doi:{c['doi']}" for c in citations(model))
    training = {k: meta[k] for k in ("method", "network", "steps", "data", "created", "n2s_tf_version") if k in meta}
    return f"""# {name}

{default_description(model)}

## Input and output

- One float32 tensor in, one out, axes {axes}, {model.channels} channel(s), raw pixel values (any range).
- Inside the TensorFlow graph each image is standardized by its own mean and std per channel, padded to
  a multiple of {model.stride} pixels, denoised, cropped back and restored to the input's mean and std.
  No clipping: the output is in the input's units.
- Spatial sizes: at least {minimum} pixels per axis (any size from there on: the graph pads to its stride).
  When tiling, crop a halo of {halo} pixels per side. Each tile is standardized by its own statistics,
  so use tiles as large as memory allows.

## Training

```
{json.dumps(training, indent=2, sort_keys=True)}
```

The full training configuration is in the weights' `assets/n2s_tf.json`; the trainable Keras network
(for fine-tuning with n2s_tf) in `assets/network.keras`.

## Validation

`test_input.npy` is a crop of a test image and `test_output.npy` what this model made of it when the
package was written; `bioimageio test <package>` (bioimageio.core) reproduces it. For a quantitative check
on your own data, denoise images with a known clean reference (or Noise2Noise pairs) and compare PSNR
or Fourier ring correlation, e.g. with `n2s-evaluate` of n2s_tf.

## Citation

{cites}
"""


def _bioimageio_spec():
    try:
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise ConfigError("bioimage.io export needs the bioimageio.spec package: "
                          "pip install 'n2s_tf[bioimageio]'") from None
    return v0_5


def build_description(model, paths: dict, name: str | None = None, description: str | None = None,
                      authors=("n2s_tf authors",), license: str = "BSD-3-Clause"):
    """The bioimage.io ModelDescr (format 0.5) of a model whose files `write_package_files` wrote."""
    import tensorflow as tf

    spec = _bioimageio_spec()
    halo, minimum, step = spatial_sizes(model)
    space = ("z", "y", "x") if model.ndim == 3 else ("y", "x")
    channels = spec.ChannelAxis(channel_names=[f"channel{i}" for i in range(model.channels)]
                                if model.channels > 1 else ["intensity"])
    size = spec.ParameterizedSize(min=minimum, step=step)
    inputs = spec.InputTensorDescr(
        id=spec.TensorId(INPUT_ID),
        description="raw pixel values, any range",
        axes=[spec.BatchAxis(), *(spec.SpaceInputAxis(id=spec.AxisId(a), size=size) for a in space), channels],
        test_tensor=spec.FileDescr(source=paths["test_input"]),
        sample_tensor=spec.FileDescr(source=paths["sample_input"]),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
    )
    outputs = spec.OutputTensorDescr(
        id=spec.TensorId(OUTPUT_ID),
        description="denoised, in the input's units",
        axes=[spec.BatchAxis(),
              *(spec.SpaceOutputAxisWithHalo(id=spec.AxisId(a), halo=halo,
                                             size=spec.SizeReference(tensor_id=spec.TensorId(INPUT_ID),
                                                                     axis_id=spec.AxisId(a)))
                for a in space),
              channels],
        test_tensor=spec.FileDescr(source=paths["test_output"]),
        sample_tensor=spec.FileDescr(source=paths["sample_output"]),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
    )
    tf_version = ".".join(tf.__version__.split(".")[:3])
    weights = spec.WeightsDescr(tensorflow_saved_model_bundle=spec.TensorflowSavedModelBundleWeightsDescr(
        source=paths["weights"], tensorflow_version=spec.Version(tf_version),
        comment="TF 2 SavedModel written by n2s_tf; signature serving_default, input 'images', output 'denoised'"))
    meta = model.metadata
    config = meta.get("config", {})
    known = dict(training_batch_size=config.get("batch_size"), initial_learning_rate=config.get("lr"))
    training = spec.TrainingDetails(
        training_preprocessing="per-image, per-channel standardization (x - mean) / std",
        loss_function=METHOD_NAMES.get(_method(model), _method(model)), optimizer="Adam",
        **{k: v for k, v in known.items() if v is not None})
    return spec.ModelDescr(
        name=name or default_name(model),
        description=description or default_description(model),
        authors=[spec.Author(name=a) for a in authors],
        cite=[spec.CiteEntry(text=c["text"], doi=spec.Doi(c["doi"])) for c in citations(model)],
        license=spec.LicenseId(license),
        tags=["denoising", "n2s_tf", "noise2same", "tensorflow", f"{model.ndim}d", _method(model)],
        documentation=spec.FileDescr(source=paths["documentation"]),
        covers=[spec.FileDescr(source=paths["cover"])],
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
        config=spec.Config(bioimageio=spec.BioimageioConfig(
            task="denoising", architecture_type=str(meta.get("network", "unet")), training=training)),
    )


def export_bioimageio(model, output, test_image: str | None = None, test_size: int | None = None,
                      name: str | None = None, description: str | None = None,
                      authors=("n2s_tf authors",), license: str = "BSD-3-Clause", overwrite: bool = False) -> str:
    """Write the bioimage.io package of an exported model (a LoadedModel or its path) to the
    .zip file `output`; bioimageio.spec validates it as it is written. Never half-written: it
    is written beside `output` under a temporary name, then renamed."""
    from n2s_tf.export import LoadedModel

    output = os.fspath(output)
    if not output.endswith(".zip"):
        raise ConfigError(f"output: a bioimage.io package is a .zip file, got {output!r}")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output} exists and overwrite is off")
    authors = [a.strip() for a in authors]
    if not authors or not all(authors):
        raise ConfigError("authors: give at least one name, none empty")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise ImageFileError(f"cannot write '{output}': folder {parent} does not exist")
    _bioimageio_spec()  # fail before any work when the extra is missing
    from bioimageio.spec import save_bioimageio_package

    if not isinstance(model, LoadedModel):
        model = LoadedModel(model)
    with tempfile.TemporaryDirectory() as staging:
        paths = write_package_files(model, staging, test_image, test_size, name)
        try:
            descr = build_description(model, paths, name, description, authors, license)
        except ValueError as error:  # pydantic's ValidationError: a bad name, licence, author...
            raise ConfigError(f"bioimage.io rejects the description: {_first_error(error)}") from None
        temporary = os.path.join(parent, f".{os.path.basename(output)}.tmp-{os.getpid()}.zip")
        try:
            save_bioimageio_package(descr, output_path=temporary)
            os.replace(temporary, output)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    return output


def _first_error(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', '')}"
    return " ".join(str(error).split())

