"""Natural-image denoising quality against the field, on the same images in one run.

    python bench/quality.py --steps=2000 --out=runs/quality
    python bench/quality.py --images=textures --sigma=50 --methods=nlm,bm3d,general   # texture row
    for s in 15 25 50; do    # the eight and gravel against BM3D per sigma, 3 min
      python bench/quality.py --images=all --sigma=$s --methods=nlm,bm3d,general --out=runs/q_sigma$s; done
    python bench/quality.py --images=demo_outside --methods=bm3d,general --general_model=runs/n2s/export/denoiser

Eight grayscale images that ship with scikit-image (central 256x256 crops) get Gaussian
noise of sigma 25 on the 0-255 scale (fixed seeds, no clipping); --images=textures scores the
periodic and textured ones instead (brick; gravel, which bench/natural_training_set.py holds
out, though `general/6` was trained before it did; the 200 px photograph of a chessboard,
whole), --images=all both, --images=demo_outside five
natural images from PyWavelets, matplotlib and scikit-image outside the built-in demo set (for the
model `python train.py` makes on the demo), --sigma another noise level. Every method sees the
noisy images only:
- classical: Gaussian filter, non-local means and BM3D (both told the true sigma);
- n2s_tf's N2S, N2SP and N2V, each trained self-supervised on the eight noisy images
  with the same step budget, batch and patch size;
- n2s_tf's shipped general model (`general`; its training images are not among the eight),
  and, when asked for, a general model fine-tuned self-supervised on each noisy image first
  (`general_adapt`: not with the shipped residual model, which adaptation cannot train);
- CAREamics' Noise2Void with the same budget, run in its own virtual environment
  (bench/peers.py installs it there on first use).
Prints per-image and mean PSNR / SSIM (0-255 scale) and each method's wall time
(training included); writes metrics.csv / metrics.json and a panel of crops to --out.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import auto_if_unset, run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

IMAGES = ("camera", "astronaut", "coins", "chelsea", "coffee", "rocket", "moon", "brick")
TEXTURES = ("brick", "gravel", "chessboard")
# Natural images outside the built-in demo set (its training and held-out images), for what
# the demo's own model does elsewhere; the general model trains on these, so not for it.
DEMO_OUTSIDE = ("pywt:ascent", "pywt:aero", "matplotlib:grace_hopper.jpg", "motorcycle", "matplotlib:s1045.ima.gz")
IMAGE_SETS = {"default": IMAGES, "textures": TEXTURES, "all": IMAGES + tuple(t for t in TEXTURES if t not in IMAGES),
              "demo_outside": DEMO_OUTSIDE}
CROP = 256
SEED = 2026
TRAINED = ("n2s", "n2sp", "n2v")
CLASSICAL = ("gaussian", "nlm", "bm3d")
SHIPPED = ("general", "general_adapt")
PEERS = ("careamics_n2v",)

flags.DEFINE_string("methods", ",".join(CLASSICAL + TRAINED + ("general",) + PEERS), "comma-separated methods "
                    f"of {', '.join(CLASSICAL + TRAINED + SHIPPED + PEERS)}")
flags.DEFINE_integer("steps", 2000, "training steps of every trained method (n2s_tf and CAREamics)")
flags.DEFINE_integer("batch_size", 16, "training batch size")
flags.DEFINE_integer("patch_size", 64, "training patch side")
flags.DEFINE_string("network", "unet", "n2s_tf network")
flags.DEFINE_string("mixed_precision", "float32", "n2s_tf training precision: float32 or bfloat16")
flags.DEFINE_float("mask_fraction", 0.005, "n2s_tf: fraction of pixels masked per patch")
flags.DEFINE_string("general_model", None, "general, general_adapt: exported model or training directory "
                                           "(default: the shipped general model)")
flags.DEFINE_integer("adapt_steps", 200, "general_adapt: self-supervised fine-tuning steps on each image")
flags.DEFINE_boolean("tta", False, "n2s_tf models: 8-fold test-time augmentation")
flags.DEFINE_boolean("collaborative", False, "the general model: collaborative filtering after it "
                     "(test_single.py --collaborative)")
flags.DEFINE_boolean("calibrate", None, "n2s_tf models: Fourier ring calibration (test_single.py --calibrate; "
                     "unset: its default, blind-spot models on white noise of one level)")
flags.DEFINE_float("gaussian_sigma", 1.0, "Gaussian filter width in pixels")
flags.DEFINE_string("images", "default", "comma-separated image names (n2s_tf.data.sample_image), or "
                    "'default' (the eight), 'textures' (brick, gravel, chessboard), 'all' (both) or "
                    "'demo_outside' (natural images outside the demo set)")
flags.DEFINE_float("sigma", 25.0, "Gaussian noise std on the 0-255 scale")
flags.DEFINE_string("out", "runs/quality", "folder for tables, panels and the training runs")
FLAGS = flags.FLAGS


def image_names():
    """The --images list: names of bundled sample images (n2s_tf.data.sample_image)."""
    names = IMAGE_SETS.get(FLAGS.images) or tuple(FLAGS.images.split(","))
    if not all(names):
        raise ConfigError(f"--images={FLAGS.images!r}: give names separated by commas or one of "
                          f"{', '.join(IMAGE_SETS)}")
    return names


def file_stem(name):
    """A sample image's name as a file name ("pywt:ascent" -> "pywt_ascent")."""
    return name.replace(":", "_")


def benchmark_images():
    """[(name, noisy, clean)]: central crops, --sigma noise from a fixed seed per image and sigma
    (sigma 25 keeps the seeds of the original eight-image table)."""
    from n2s_tf.data import sample_image

    triples = []
    for name in image_names():
        # The eight keep their seeds; any other image gets one from its name.
        index = IMAGES.index(name) if name in IMAGES else sum(map(ord, name))
        try:
            image = sample_image(name)
        except (AttributeError, ValueError, OSError) as error:
            raise ConfigError(f"--images: cannot load the sample image {name!r} ({error})") from None
        side = min(CROP, *image.shape)  # smaller images whole
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        clean = image[top:top + side, left:left + side]
        seed = [SEED, index] if FLAGS.sigma == 25 else [SEED, index, int(round(FLAGS.sigma * 100))]
        noise = np.random.default_rng(seed).normal(0.0, FLAGS.sigma, clean.shape)
        triples.append((name, (clean + noise).astype(np.float32), clean))
    return triples


def classical_denoiser(method):
    """A filter on the 0-255 image; NLM and BM3D are given the true noise sigma."""
    from n2s_tf import baselines
    from n2s_tf.evaluate import Denoiser

    params = {"gaussian": {"sigma": FLAGS.gaussian_sigma}, "nlm": {"sigma": FLAGS.sigma},
              "bm3d": {"sigma": FLAGS.sigma}}[method]
    return Denoiser(method, lambda x: baselines.run_baseline(method, x[..., None], **params)[..., 0])


def train_n2s_tf(method, noisy_dir):
    """Train one n2s_tf method on the noisy images; (Denoiser, training seconds).

    A run folder that already holds this budget's export (and its recorded training time)
    is reused, so a table can be re-made, or a method added, without training again."""
    from n2s_tf import api, evaluate
    from n2s_tf.export import resolve_export

    model_dir = os.path.join(FLAGS.out, "runs", method)
    record = os.path.join(model_dir, "bench_training.json")
    budget = dict(steps=FLAGS.steps, batch_size=FLAGS.batch_size, patch_size=FLAGS.patch_size,
                  network=FLAGS.network, mixed_precision=FLAGS.mixed_precision, mask_fraction=FLAGS.mask_fraction)
    try:
        with open(record) as f:
            recorded = json.load(f)
        export, seconds = resolve_export(model_dir), recorded["train_seconds"]
        if recorded["budget"] != budget:
            raise ConfigError(f"{model_dir} was trained with {recorded['budget']}, not {budget}; "
                              f"remove it or choose another --out")
        print(f"n2s_tf {method}: reusing {export} (trained in {seconds:.0f} s)", file=sys.stderr)
    except FileNotFoundError:
        start = time.perf_counter()
        export = api.train(model=method, data=noisy_dir, steps=FLAGS.steps, network=FLAGS.network,
                           batch_size=FLAGS.batch_size, patch_size=(FLAGS.patch_size,) * 2,
                           mixed_precision=FLAGS.mixed_precision, mask_fraction=FLAGS.mask_fraction,
                           checkpoint_every=FLAGS.steps,
                           model_dir=model_dir)["export_dir"]
        seconds = time.perf_counter() - start
        with open(record, "w") as f:
            json.dump(dict(budget=budget, train_seconds=seconds), f)
    denoiser = evaluate.model_denoiser(export, name=f"n2s_tf {method}", tta=FLAGS.tta,
                                       calibrate=auto_if_unset(FLAGS.calibrate))
    return denoiser, seconds


def shipped_denoiser(method):
    """The general model, as it is or fine-tuned on each image before denoising it."""
    from n2s_tf import api, evaluate

    model = api.load_model(FLAGS.general_model or str(api.SHIPPED_MODELS / "general"), precision="float32")
    adapt = FLAGS.adapt_steps if method == "general_adapt" else 0
    return evaluate.model_denoiser(model, name=f"n2s_tf {method}", tta=FLAGS.tta,
                                   calibrate=auto_if_unset(FLAGS.calibrate), adapt_steps=adapt,
                                   collaborative=FLAGS.collaborative)


def run_careamics(triples, work):
    """CAREamics N2V trained on the noisy images with the same budget; {image: output}, result."""
    import peers

    inputs, outputs = [], []
    for name, _noisy, _ in triples:
        inputs.append(os.path.join(work, f"{file_stem(name)}.npy"))
        outputs.append(os.path.join(work, f"{file_stem(name)}_careamics.npy"))
    result = peers.run_peer("careamics_n2v", inputs=",".join(inputs), outputs=",".join(outputs),
                            steps=FLAGS.steps, batch_size=FLAGS.batch_size, patch_size=FLAGS.patch_size,
                            result=os.path.join(work, "careamics.json"))
    return {name: np.load(path) for (name, _, _), path in zip(triples, outputs)}, result


def main(argv):
    methods = [m for m in FLAGS.methods.split(",") if m]
    known = CLASSICAL + TRAINED + SHIPPED + PEERS
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ConfigError(f"--methods: {unknown[0] if unknown else 'none given'}; choose from {', '.join(known)}")
    if FLAGS.steps < 1:
        raise ConfigError("--steps must be at least 1")
    from n2s_tf import evaluate, reports
    from n2s_tf.evaluate import Denoiser

    triples = benchmark_images()
    denoisers, train_seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="quality_") as work:
        for name, noisy, _ in triples:
            np.save(os.path.join(work, f"{file_stem(name)}.npy"), noisy)
        for method in methods:
            if method in CLASSICAL:
                denoisers.append(classical_denoiser(method))
            elif method in SHIPPED:
                denoisers.append(shipped_denoiser(method))
            elif method in TRAINED:
                denoiser, train_seconds[denoiser.name] = train_n2s_tf(method, work)
                denoisers.append(denoiser)
                print(f"{denoiser.name}: trained {FLAGS.steps} steps in {train_seconds[denoiser.name]:.0f} s",
                      file=sys.stderr, flush=True)
            else:
                outputs, result = run_careamics(triples, work)
                train_seconds["careamics n2v"] = result["train_seconds"] + result["predict_seconds"]
                print(f"careamics n2v: {result['steps_done']} steps in {result['train_seconds']:.0f} s",
                      file=sys.stderr, flush=True)
        rows = []
        for name, noisy, clean in triples:
            # The peer ran in its own process: its outputs are looked up, its time is added below.
            peer = ([Denoiser("careamics n2v", lambda x, out=outputs[name]: out)]
                    if "careamics n2v" in train_seconds else [])
            rows += evaluate.evaluate([(name, noisy, clean)], denoisers + peer, standardized=False, keep_outputs=True)

    for row in rows:
        row["wall_seconds"] = row["seconds"] + train_seconds.get(row["method"], 0.0) / len(triples)
    names = [name for name, _, _ in triples]
    print(f"\n{len(triples)} images ({', '.join(names)}), central {CROP}x{CROP}, "
          f"Gaussian noise sigma {FLAGS.sigma:g} (0-255, unclipped); trained methods: {FLAGS.steps} steps, "
          f"batch {FLAGS.batch_size}, {FLAGS.patch_size}x{FLAGS.patch_size} patches")
    print(format_quality_table(rows, names))
    os.makedirs(FLAGS.out, exist_ok=True)
    for ext in ("csv", "json"):
        reports.write_table(rows, os.path.join(FLAGS.out, f"metrics.{ext}"))
    first = [r for r in rows if r["image"] == names[0]]
    outputs = {r["method"]: r["output"] for r in first if r["method"] != evaluate.NOISY}
    reports.plot_panels(triples[0][1], outputs, triples[0][2], os.path.join(FLAGS.out, "panels.png"),
                         crop=CROP, titles={r["method"]: f"PSNR {r['psnr']:.2f}" for r in first})
    print(f"wrote {FLAGS.out}/metrics.csv, metrics.json, panels.png")


def format_quality_table(rows, names):
    """Methods down, images across: PSNR per image, mean PSNR, mean SSIM, wall seconds; with a
    BM3D row, each method's mean PSNR minus BM3D's and its largest shortfall on one image."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    short = [n.rpartition(":")[2].split(".")[0][:8] for n in names]
    bm3d = [r["psnr"] for r in rows if r["method"] == "bm3d"]
    lines = [f"{'method':16s} " + " ".join(f"{n:>8s}" for n in short) +
             f" {'PSNR':>7s} {'SSIM':>6s} {'wall s':>7s}" + (f" {'vs BM3D':>7s} {'worst':>6s}" if bm3d else "")]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        line = (f"{method:16s} " + " ".join(f"{r['psnr']:8.2f}" for r in mine) +
                f" {np.mean([r['psnr'] for r in mine]):7.2f} {np.mean([r['ssim'] for r in mine]):6.3f}"
                f" {sum(r['wall_seconds'] for r in mine):7.0f}")
        if bm3d:
            gaps = [r["psnr"] - b for r, b in zip(mine, bm3d)]
            line += f" {np.mean(gaps):+7.2f} {min(gaps):+6.2f}"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
