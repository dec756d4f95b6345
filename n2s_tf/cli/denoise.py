"""`python test_single.py` / `n2s-denoise`: denoise images with an exported model.

    python test_single.py                                    # the shipped example image
    python test_single.py --input=mic.mrc --output=mic_dn.mrc --preview=mic_dn.png
    python test_single.py --input='mics/*.mrc' --output=denoised/ --tta

The output format follows the output's extension: MRC keeps the input's header
(voxel size, origin, axis order; statistics recomputed), TIFF and NPY keep float32
values unclipped, PNG is 8-bit. Inputs are never overwritten; outputs appear only
when complete.
"""

import os
import sys
import time
from pathlib import Path

from absl import flags

from n2s_tf.cli.common import run_main
from n2s_tf.config import METHODS
from n2s_tf.errors import ConfigError

FLAGS = flags.FLAGS
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "noisy_camera.png"

flags.DEFINE_string("input", None, "image file, folder or glob (default: the shipped example image)")
flags.DEFINE_string("input_b", None, "Noise2Noise: the other halves (odd sums) of --input, same file names; "
                                     "each half is denoised and the two are averaged")
flags.DEFINE_string("output", None, "output file, or a folder for many inputs "
                                    "(default: <input name>_denoised<ext> in the current folder)")
flags.DEFINE_string("model", None, "exported model or training directory (default: the shipped model "
                                   "for the input's kind in trained_models/)")
flags.DEFINE_integer("tile", None, "tile size in pixels (default: chosen from --max_memory)")
flags.DEFINE_float("max_memory", 2.0, "memory budget for one tile's activations, in GB")
flags.DEFINE_integer("adapt_steps", 0, "first fine-tune the model on each input for N self-supervised steps "
                                       "(a few hundred; adapts it to the image's content and noise level)")
flags.DEFINE_string("adapt_method", "n2s", "loss used by --adapt_steps: n2s, n2sp, n2v or n2v2")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "bfloat16"],
                  "compute precision; auto = bfloat16 on CPUs with native bfloat16 (AVX512-BF16, AMX), "
                  "else float32 (exactly the SavedModel that TF Serving runs)")
flags.DEFINE_boolean("tta", False, "8-fold test-time augmentation (rotations and flips; 8x slower)")
flags.DEFINE_boolean("calibrate", False, "mix prediction and input per Fourier ring with weights estimated "
                     "from the image (white noise only; 2x slower); see n2s_tf/calibration.py")
flags.DEFINE_enum("whiten", "auto", ["auto", "on", "off"], "whiten correlated noise with the image's own noise "
                  "spectrum before denoising and re-colour after (n2s_tf/whitening.py); auto = for blind-spot "
                  "models when the noise is correlated")
flags.DEFINE_boolean("report_noise", False, "print a line on each input's noise (autocorrelation at lags 1-3, "
                     "spectrum) and on its residual input - output")
flags.DEFINE_string("preview", None, "also write an 8-bit PNG view (-3..+3 sigma); a folder for many inputs")
flags.DEFINE_boolean("keep_extended_header", False, "MRC: copy the input's extended header to the output")
flags.DEFINE_boolean("overwrite", False, "replace existing output files (inputs are never replaced)")


def output_paths(inputs, output, suffix="_denoised"):
    """Where each input's result goes; refuses to write over an input."""
    many = len(inputs) > 1 or (output is not None and (output.endswith(os.sep) or os.path.isdir(output)))
    paths = []
    for path in inputs:
        name = Path(path)
        if output is None:
            target = Path.cwd() / f"{name.stem}{suffix}{name.suffix}"
        elif many:
            target = Path(output) / name.name
        else:
            target = Path(output)
        if target.resolve() == name.resolve():
            raise ConfigError(f"the output {target} would overwrite its input; choose another --output")
        paths.append(str(target))
    return paths


def main(argv):
    from n2s_tf import api, io

    inputs = io.list_inputs(FLAGS.input) if FLAGS.input else [str(EXAMPLE)]
    outputs = output_paths(inputs, FLAGS.output)
    previews = output_paths(inputs, FLAGS.preview, suffix="_preview") if FLAGS.preview else [None] * len(inputs)
    previews = [p and str(Path(p).with_suffix(".png")) for p in previews]
    for target in outputs:
        if os.path.exists(target) and not FLAGS.overwrite:
            raise ConfigError(f"{target} exists; pass --overwrite to replace it")
    if FLAGS.output and len(inputs) > 1:
        os.makedirs(FLAGS.output, exist_ok=True)
    if FLAGS.preview and len(inputs) > 1:
        os.makedirs(FLAGS.preview, exist_ok=True)

    model = api.load_model(FLAGS.model or api.default_model_path(inputs[0]), precision=FLAGS.precision)
    print(f"model: {model.path} ({model.metadata['method']} on {model.metadata['network']}, "
          f"{model.metadata['steps']} steps, {model.precision})", file=sys.stderr)
    if FLAGS.adapt_steps and METHODS[model.metadata["method"]].target:
        # Measured on bench/quality.py after 200 N2S steps: general/3 (n2t) lost 3.1 dB, general/2 2.9 dB;
        # a residual network (the shipped general model) is refused by training.adapt.
        print(f"warning: --adapt_steps fine-tunes self-supervised, away from this {model.metadata['method']} "
              f"model's (non-blind) solution; it usually makes such a model worse", file=sys.stderr)
    for source, target, preview in zip(inputs, outputs, previews):
        start = time.time()
        image = io.read_image(source)
        report = _noise_report(source, image.data, model)
        denoised = _denoise(image, model)
        if report and FLAGS.report_noise:
            _noise_report(f"{source} residual", image.data - denoised, model)
        if FLAGS.input_b:
            half = os.path.join(FLAGS.input_b, os.path.basename(source))
            other = io.read_image(half)
            if other.data.shape != image.data.shape:
                raise ConfigError(f"{half} has shape {other.data.shape}, its other half {source} {image.data.shape}")
            denoised = (denoised + _denoise(other, model)) / 2
        io.write_image(target, denoised, like=image, keep_extended_header=FLAGS.keep_extended_header,
                       overwrite=FLAGS.overwrite)
        if preview:
            io.write_preview(preview, denoised, overwrite=FLAGS.overwrite)
        print(f"wrote {target}" + (f" and {preview}" if preview else "") +
              f" ({time.time() - start:.1f} s)")


WHITEN = {"auto": "auto", "on": True, "off": False}


def _noise_report(name, data, model):
    """--report_noise: one line on the noise of `data` (first channel); without it only the warning
    that a blind-spot model meets correlated noise it will not whiten (--whiten=off). The report or None."""
    from n2s_tf import api, noise

    warn = FLAGS.whiten == "off" and api.blind_spot(model, FLAGS.adapt_steps)
    if not (FLAGS.report_noise or warn):
        return None
    try:
        report = noise.noise_report(data[..., 0], model.ndim)
    except ValueError:
        print(f"{name}: too small to measure its noise", file=sys.stderr)
        return None
    if FLAGS.report_noise:
        print(f"{name}: {noise.summary_line(report)}", file=sys.stderr)
    if warn and report["verdict"] == "correlated":
        print(f"warning: {name}: correlated noise (lag 1 {report['lag1']:.2f}) and --whiten=off: a blind-spot "
              f"model trained on white noise passes the correlated part through", file=sys.stderr)
    return report


def _denoise(image, model):
    """Denoise an io.Image: each plane of a stack on its own, else the whole image or volume."""
    import numpy as np

    from n2s_tf import api

    tiling = dict(tile=FLAGS.tile, max_memory=FLAGS.max_memory * 1e9, tta=FLAGS.tta,
                  adapt_steps=FLAGS.adapt_steps, adapt_method=FLAGS.adapt_method, calibrate=FLAGS.calibrate,
                  whiten=WHITEN[FLAGS.whiten])
    if image.kind == "stack":
        return np.stack([api.denoise(plane, model, **tiling) for plane in image.data])
    return api.denoise(image.data, model, progress=sys.stderr.isatty(), **tiling)


def run():
    run_main(main)


if __name__ == "__main__":
    run()
