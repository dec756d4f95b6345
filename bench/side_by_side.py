"""One micrograph denoised by n2s_tf's default and by the peers, side by side (crops) and scored.

    python bench/side_by_side.py --input=../shared/data/fei-extended.mrc --out=runs/side_fei     # ~25 min
    python bench/side_by_side.py --detector=lag0.55 --seed=900 --out=runs/side_movie           # ~10 min

--input: a real micrograph (MRC or NPY); nothing to score against, so only the picture and each
method's seconds. --detector: a micrograph of a counting-detector movie instead
(synthetic.simulate_movie with that synthetic.DETECTORS preset, 1024 px, --pdb, --snr, --seed),
scored standardized against its clean image: PSNR, FRC-AUC and the residual's lag-1
autocorrelation. Methods: `n2s_tf` (test_single.py's default model for an MRC micrograph), Topaz-
Denoise's pretrained model, CAREamics Noise2Void trained --steps on the micrograph (the peers run
in their own venv, bench/peers.py). Writes panels.png (a --crop pixel crop at --crop_at, binned
--bin x --bin, each at mean +- 3 std), metrics.json and each method's output (.npy) and row
(.json) to --out; run again, it keeps the methods already there (delete them to redo one).
"""

import json
import os
import sys
import time

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

FLAGS = flags.FLAGS
if "pdb" in FLAGS:  # absl.app's --pdb (post-mortem) alias; here --pdb is the atomic model
    delattr(FLAGS, "pdb")
flags.DEFINE_string("input", None, "a real micrograph (MRC or NPY)")
flags.DEFINE_string("detector", None, "simulate a movie micrograph with this synthetic.DETECTORS preset instead")
flags.DEFINE_string("pdb", os.path.join(ROOT, "..", "shared", "data", "6z6u.pdb"), "atomic model (--detector)")
flags.DEFINE_float("snr", 0.1, "SNR before the detector (--detector)")
flags.DEFINE_integer("seed", 900, "simulation seed (--detector); the shipped models' data use 100-635 and 1000-1929")
flags.DEFINE_string("methods", "n2s_tf,topaz,careamics_n2v", "comma-separated: n2s_tf, topaz, careamics_n2v")
flags.DEFINE_integer("steps", 1000, "CAREamics training steps")
flags.DEFINE_integer("crop", 1024, "crop side in pixels")
flags.DEFINE_string("crop_at", "", "crop corner row,col (default: the centre)")
flags.DEFINE_integer("bin", 2, "display binning")
flags.DEFINE_string("out", "runs/side_by_side", "output folder")

METHODS = ("n2s_tf", "topaz", "careamics_n2v")


def micrograph():
    """(noisy, clean or None, name)."""
    from n2s_tf import io, synthetic

    if FLAGS.detector:
        if FLAGS.detector not in synthetic.DETECTORS:
            raise ConfigError(f"--detector={FLAGS.detector!r}; choose from {', '.join(synthetic.DETECTORS)}")
        mic = synthetic.simulate_movie(FLAGS.pdb, (1024, 1024), n_frames=24, dose_per_frame=40 / 24, snr=FLAGS.snr,
                                       seed=FLAGS.seed, **synthetic.DETECTORS[FLAGS.detector])
        return mic["noisy"], mic["clean"], f"movie_{FLAGS.detector}"
    if not FLAGS.input:
        raise ConfigError("give --input (a real micrograph) or --detector (a simulated one)")
    return io.read_image(FLAGS.input).data[..., 0].astype(np.float32), None, os.path.basename(FLAGS.input)


def denoise(method, noisy, source, work):
    """The method's output for `noisy` (saved at `source` for the peers) and its wall seconds
    (CAREamics: training included)."""
    import peers

    from n2s_tf import api

    start = time.perf_counter()
    if method == "n2s_tf":
        out = api.denoise(noisy, str(api.SHIPPED_MODELS / api.DEFAULT_MODELS["cryo"]))
        return out, time.perf_counter() - start
    target = os.path.join(work, f"{method}.npy")
    if method == "topaz":
        peers.run_peer("topaz_denoise", inputs=source, outputs=target)
    else:  # CAREamics predicts whole images only at sides divisible by 4: tiles, as bench/speed.py
        peers.run_peer("careamics_n2v", inputs=source, outputs=target, steps=FLAGS.steps, tile=256)
    return np.load(target), time.perf_counter() - start


def crop_view(image, corner):
    r, c = corner
    x = np.asarray(image[r:r + FLAGS.crop, c:c + FLAGS.crop], np.float64)
    b = FLAGS.bin
    x = x[: x.shape[0] // b * b, : x.shape[1] // b * b].reshape(x.shape[0] // b, b, x.shape[1] // b, b).mean((1, 3))
    return np.clip((x - x.mean() + 3 * x.std()) / (6 * x.std() or 1.0), 0, 1)


def main(argv):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from n2s_tf import evaluate, noise

    methods = [m for m in FLAGS.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: {unknown[0] if unknown else 'none given'}; choose from {', '.join(METHODS)}")
    noisy, clean, name = micrograph()
    os.makedirs(FLAGS.out, exist_ok=True)
    if FLAGS.crop_at:
        corner = tuple(int(v) for v in FLAGS.crop_at.split(","))
    else:
        corner = tuple(max((n - FLAGS.crop) // 2, 0) for n in noisy.shape)
    source = os.path.join(FLAGS.out, "noisy.npy")  # the peers' input, written once
    np.save(source, noisy)
    panels, rows = {"raw": noisy}, []
    for method in methods:
        output, saved_row = (os.path.join(FLAGS.out, f"{method}{ext}") for ext in (".npy", ".json"))
        if os.path.exists(output) and os.path.exists(saved_row):  # a rerun after a failure: kept
            out = np.load(output)
            with open(saved_row) as f:
                row = json.load(f)
        else:
            out, seconds = denoise(method, noisy, source, FLAGS.out)
            row = dict(method=method, seconds=round(seconds, 1),
                       resid_lag1=round(noise.noise_report(noisy - out)["lag1"], 3))
            if clean is not None:
                scores = evaluate.score(clean, out)
                row.update(psnr=round(scores["psnr"], 2), mean_frc=round(scores["mean_frc"], 4))
            np.save(output, out)
            with open(saved_row, "w") as f:
                json.dump(row, f)
        rows.append(row)
        panels[method] = out
        print(json.dumps(row), flush=True)
    if clean is not None:
        panels["clean"] = clean
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels.items()):
        ax.imshow(crop_view(image, corner), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    panels_png = os.path.join(FLAGS.out, "panels.png")
    fig.savefig(panels_png, dpi=80)
    from PIL import Image  # matplotlib's own dependency

    Image.open(panels_png).convert("L").save(panels_png, optimize=True)  # gray: half the bytes
    noise_line = noise.summary_line(noise.noise_report(noisy))
    with open(os.path.join(FLAGS.out, "metrics.json"), "w") as f:
        json.dump(dict(micrograph=name, noise=noise_line, rows=rows), f, indent=1)
    print(f"{name}: {noise_line}\nwrote {FLAGS.out}/panels.png, metrics.json")


if __name__ == "__main__":
    run_main(main)
