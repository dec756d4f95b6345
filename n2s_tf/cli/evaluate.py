"""`python -m n2s_tf.cli.evaluate`: score models and baselines on noisy/clean pairs.

    python -m n2s_tf.cli.evaluate --noisy=test/noisy/ --clean=test/clean/ \\
        --models=runs/a,runs/b --baselines=gaussian,fourier_lowpass:cutoff=0.05 --out=runs/eval/

Files are paired by name. Prints the per-method means and writes, in --out,
metrics.csv and metrics.json (one row per image and method, the JSON with FRC curves),
frc.png (FRC curves of the first image) and panels.png (that image by every method).
Scores are on standardized images for cryo-EM data and on the 0-255 scale for 8-bit
images (see n2s_tf.evaluate); --standardized overrides the choice.
"""

import json
import os

from absl import flags

from n2s_tf.cli.common import run_main

FLAGS = flags.FLAGS
flags.DEFINE_string("noisy", None, "folder of noisy images", required=True)
flags.DEFINE_string("clean", None, "folder of clean references with the same file names", required=True)
flags.DEFINE_string("models", "", "comma-separated exported models or training directories")
flags.DEFINE_string("baselines", "", "comma-separated baselines, each name[:param=value[:...]], "
                                     "e.g. gaussian:sigma=2,fourier_lowpass:cutoff=0.05")
flags.DEFINE_string("out", "runs/evaluate", "folder for metrics.csv, metrics.json, frc.png, panels.png")
flags.DEFINE_float("pixel_size", None, "Angstrom per pixel for resolutions (default: the MRC header's, "
                                       "else resolutions are in pixels)")
flags.DEFINE_boolean("tta", False, "models: 8-fold test-time augmentation")
flags.DEFINE_boolean("calibrate", False, "models: Fourier ring calibration (see n2s_tf/calibration.py)")
flags.DEFINE_enum("standardized", "auto", ["auto", "true", "false"],
                  "score standardized images (auto: yes unless the clean images are 8-bit)")


def parse_baseline(spec: str):
    """'fourier_lowpass:cutoff=0.05' -> baseline_denoiser('fourier_lowpass', cutoff=0.05); the
    parameters are checked here (names of the filter's, numeric values), not mid-evaluation."""
    import inspect

    from n2s_tf.baselines import BASELINES
    from n2s_tf.errors import ConfigError
    from n2s_tf.evaluate import baseline_denoiser

    name, *items = spec.split(":")
    if name not in BASELINES:
        raise ConfigError(f"--baselines: unknown baseline {name!r}; choose from: {', '.join(BASELINES)}")
    known = [p for p in inspect.signature(BASELINES[name]).parameters if p != "image"]
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--baselines item {spec!r}: {item!r} is not param=value")
        if key not in known:
            raise ConfigError(f"--baselines item {spec!r}: {name} has no parameter {key!r} "
                              f"(it has: {', '.join(known)})")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = None
        if isinstance(params[key], bool) or not isinstance(params[key], (int, float)):
            raise ConfigError(f"--baselines item {spec!r}: {key}={value!r} is not a number")
    return baseline_denoiser(name, **params)


def main(argv):
    from n2s_tf import evaluate, io, reports
    from n2s_tf.errors import ConfigError

    files = io.paired_files(FLAGS.noisy, FLAGS.clean)
    models = [evaluate.model_denoiser(path, tta=FLAGS.tta, calibrate=FLAGS.calibrate)
              for path in filter(None, FLAGS.models.split(","))]
    denoisers = models + [parse_baseline(spec) for spec in filter(None, FLAGS.baselines.split(","))]
    names = [d.name for d in denoisers]
    duplicates = sorted({n for n in names if names.count(n) > 1} | ({evaluate.NOISY} & set(names)))
    if duplicates:
        raise ConfigError(f"two methods would be named {duplicates[0]!r}; rename a model folder")

    first = io.read_image(files[0][1])
    pixel_size = FLAGS.pixel_size
    if pixel_size is None and first.mrc and first.mrc["voxel_size"][0] > 0:
        pixel_size = first.mrc["voxel_size"][0]
    if FLAGS.standardized == "auto":
        standardized = first.dtype != "uint8"
    else:
        standardized = FLAGS.standardized == "true"

    def pairs(subset):
        for noisy, clean in subset:
            yield os.path.basename(noisy), io.read_image(noisy).data, io.read_image(clean).data

    # Keep the outputs of the first image only, for the panels.
    rows = evaluate.evaluate(pairs(files[:1]), denoisers, standardized, pixel_size, keep_outputs=True)
    rows += evaluate.evaluate(pairs(files[1:]), denoisers, standardized, pixel_size)

    summary = evaluate.summarize(rows)
    scale = "standardized" if standardized else "0-255 scale"
    print(f"{len(files)} image pair(s), scored {scale}" + (f", {pixel_size:g} A/px" if pixel_size else ""))
    print(reports.format_table(summary, columns=evaluate.TABLE_COLUMNS + ("seconds",)))
    os.makedirs(FLAGS.out, exist_ok=True)
    reports.write_table(rows, os.path.join(FLAGS.out, "metrics.csv"))
    reports.write_table(rows, os.path.join(FLAGS.out, "metrics.json"))
    reports.plot_frc(evaluate.frc_curves(rows), os.path.join(FLAGS.out, "frc.png"))
    outputs = {r["method"]: r["output"] for r in rows if "output" in r}
    captions = {r["method"]: f"PSNR {r['psnr']:.2f}  CC {r['cc']:.3f}" for r in rows if "output" in r}
    noisy = outputs.pop(evaluate.NOISY)
    reports.plot_panels(noisy, outputs, first.data, os.path.join(FLAGS.out, "panels.png"), titles=captions)
    print(f"wrote {FLAGS.out}/metrics.csv, metrics.json, frc.png, panels.png")


def run():
    run_main(main)


if __name__ == "__main__":
    run()
