"""Does the default calibration (api.denoise(calibrate="auto")) ever cost? One model over many
images and noises, uncalibrated, calibration forced, and the default.

    python bench/calibration_check.py --model=runs/demo/export                 # about 3 minutes

Each image of --images (n2s_tf.data.sample_image names; grayscale, the top-left --crop pixels)
gets each noise of --noises: gaussianS (sigma S on the 0-255 scale) or countsP (counting noise
with P counts at the image's brightest pixel, 1 count of background, plus Gaussian read noise of
--read_noise counts per 100 counts at the peak). PSNR against the clean image (its own range for
counting noise). Prints a row per case and the means per noise, and how many cases the default
left more than 0.1 dB below no calibration. The defaults chose their guard on other images
(docs/benchmarks.md, "The verdict fix and calibration by default").
"""

import os
import sys

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

IMAGES = ("text", "page", "horse", "immunohistochemistry", "microaneurysms", "shepp_logan_phantom", "checkerboard",
          "colorwheel")
flags.DEFINE_string("model", None, "exported blind-spot model (or its training directory)")
flags.DEFINE_string("images", ",".join(IMAGES), "comma-separated sample images (n2s_tf.data.sample_image)")
flags.DEFINE_string("noises", "gaussian10,gaussian30,gaussian70,counts30,counts300", "comma-separated noises")
flags.DEFINE_integer("crop", 320, "image side in pixels (top-left crop)")
flags.DEFINE_float("read_noise", 2.0, "counting noise: Gaussian read noise in counts per 100 counts at the peak, "
                                      "at least 2")
flags.DEFINE_integer("seed", 11, "noise seed")
FLAGS = flags.FLAGS
MODES = {"uncalibrated": False, "forced": True, "default": "auto"}


def noisy_case(clean, noise, rng):
    """(reference, noisy, PSNR range) of one image and one noise name."""
    kind, level = noise.rstrip("0123456789"), noise[len(noise.rstrip("0123456789")):]
    if kind not in ("gaussian", "counts") or not level:
        raise ConfigError(f"--noises: {noise!r} is not gaussianS or countsP")
    if kind == "gaussian":
        return clean, clean + rng.normal(0, float(level), clean.shape), 255.0
    expected = clean / max(clean.max(), 1e-9) * float(level) + 1.0
    read = max(2.0, FLAGS.read_noise * float(level) / 100)
    noisy = rng.poisson(expected) + rng.normal(0, read, clean.shape)
    return expected, noisy, float(expected.max() - expected.min())


def main(argv):
    if not FLAGS.model:
        raise ConfigError("--model: give an exported blind-spot model")
    import n2s_tf
    from n2s_tf import metrics
    from n2s_tf.data import sample_image

    model = n2s_tf.load_model(FLAGS.model)
    names, noises = FLAGS.images.split(","), FLAGS.noises.split(",")
    scores, worse = {noise: [] for noise in noises}, 0
    for i, name in enumerate(names):
        image = sample_image(name).astype(np.float64)
        image = (image.mean(-1) if image.ndim == 3 else image)[:FLAGS.crop, :FLAGS.crop]
        for j, noise in enumerate(noises):
            reference, noisy, data_range = noisy_case(image, noise, np.random.default_rng([FLAGS.seed, i, j]))
            row = [metrics.psnr(reference, n2s_tf.denoise(noisy.astype(np.float32), model, calibrate=mode),
                                data_range=data_range) for mode in MODES.values()]
            scores[noise].append(row)
            worse += row[2] < row[0] - 0.1
            print(f"{noise:12s} {name[:20]:20s} " + "  ".join(f"{m} {v:6.2f}" for m, v in zip(MODES, row)),
                  flush=True)
    print("\nmean PSNR  " + "  ".join(f"{m:>12s}" for m in MODES))
    for noise, rows in scores.items():
        print(f"{noise:10s} " + "  ".join(f"{v:12.2f}" for v in np.mean(rows, axis=0)))
    print(f"cases where the default is more than 0.1 dB below no calibration: {worse} of "
          f"{len(names) * len(noises)}")


if __name__ == "__main__":
    run_main(main)
