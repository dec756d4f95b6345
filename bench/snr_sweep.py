"""Denoising quality against input SNR on simulated micrographs with a known clean image.

    python bench/snr_sweep.py --pdb=../shared/data/6z6u.pdb --steps=300 --out=results/snr_sweep
    python bench/snr_sweep.py --snrs=0.05,0.3 --steps=50 --size=256 --particles=4   # quick look

For each SNR (default: 10 values log-spaced from 0.01 to 0.5) one micrograph of randomly
oriented copies of the PDB model is simulated (CTF-modulated, with an even/odd pair of
independent noise draws). N2N trains on the pair, N2V, N2S and N2SP on the noisy image
alone, each with the same step budget; the baselines filter the noisy image. Everything
is scored against the clean image, standardized (n2s_tf.evaluate). Writes to --out:
metrics.csv / metrics.json, {psnr,cc,mean_frc}_vs_snr.png, and frc.png / panels.png at
the SNR nearest --plot_snr.
"""

import os
import sys
import tempfile
import time

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import parse_network_args, run_main  # noqa: E402
from n2s_tf.config import ConfigError  # noqa: E402

TRAINED = ("n2n", "n2v", "n2s", "n2sp")
# Bench name -> (n2s_tf.baselines name, parameters).
BASELINES = {
    "lowpass0.05": ("fourier_lowpass", {"cutoff": 0.05}),  # cycles/pixel
    "lowpass0.001": ("fourier_lowpass", {"cutoff": 0.001}),
    "gaussian2": ("gaussian", {"sigma": 2.0}),
}
DEFAULT_SNRS = np.geomspace(0.01, 0.5, 10)

FLAGS = flags.FLAGS
# absl.app defines --pdb as an alias of --pdb_post_mortem; here --pdb is the atomic model.
if "pdb" in FLAGS:
    delattr(FLAGS, "pdb")
flags.DEFINE_string("pdb", os.path.join(ROOT, "..", "shared", "data", "6z6u.pdb"), "atomic model (PDB or mmCIF)")
flags.DEFINE_string("out", "results/snr_sweep", "folder for the tables and plots")
flags.DEFINE_string("snrs", "", "comma-separated SNRs (default: 10 log-spaced from 0.01 to 0.5)")
flags.DEFINE_string("methods", ",".join(TRAINED + tuple(BASELINES)), "comma-separated methods")
flags.DEFINE_integer("steps", 300, "training steps per method and SNR")
flags.DEFINE_integer("pro_steps", None, "n2sp: steps with the learned noise level (default: half of --steps, "
                                        "at most 500)")
flags.DEFINE_string("network", "unet", "network for every trained method")
flags.DEFINE_string("network_args", "", "network options, e.g. depth=2,base_filters=16")
flags.DEFINE_integer("batch_size", 16, "batch size")
flags.DEFINE_integer("patch_size", 64, "training patch side")
flags.DEFINE_integer("size", 512, "micrograph side in pixels")
flags.DEFINE_float("pixel_size", 1.5, "Angstrom per pixel")
flags.DEFINE_float("defocus", 1.5, "defocus in micrometres (underfocus)")
flags.DEFINE_integer("particles", 10, "particles per micrograph")
flags.DEFINE_integer("seed", 0, "simulation and training seed")
flags.DEFINE_float("plot_snr", 0.05, "FRC curves and panels are drawn at the sweep's SNR nearest this")
flags.DEFINE_boolean("tta", False, "trained models: 8-fold test-time augmentation")


def parse_snrs(text):
    try:
        snrs = [float(v) for v in text.split(",")] if text else list(DEFAULT_SNRS)
    except ValueError:
        snrs = []
    if not snrs or min(snrs) <= 0:
        raise ConfigError(f"--snrs={text!r} must be positive numbers separated by commas")
    return snrs


def train_model(method, noisy_dir, other_dir, model_dir):
    """Train one method on the micrograph (N2N: against its other half); its Denoiser."""
    from n2s_tf import api, evaluate

    steps = FLAGS.steps
    pro_steps = FLAGS.pro_steps if FLAGS.pro_steps is not None else min(steps // 2, 500)
    result = api.train(model=method, data=noisy_dir, target=other_dir if method == "n2n" else None,
                       steps=steps, pro_steps=pro_steps, network=FLAGS.network,
                       network_args=parse_network_args(FLAGS.network_args), batch_size=FLAGS.batch_size,
                       patch_size=(FLAGS.patch_size,) * 2, seed=FLAGS.seed,
                       checkpoint_every=steps, model_dir=model_dir)
    return evaluate.model_denoiser(result["export_dir"], name=method, tta=FLAGS.tta)


def main(argv):
    if not os.path.isfile(FLAGS.pdb):
        raise ConfigError(f"--pdb={FLAGS.pdb}: no such file (a PDB/mmCIF model is needed to simulate micrographs)")
    snrs = parse_snrs(FLAGS.snrs)
    methods = [m for m in FLAGS.methods.split(",") if m]
    unknown = [m for m in methods if m not in TRAINED and m not in BASELINES]
    if unknown or not methods:
        raise ConfigError(f"--methods: {unknown[0] if unknown else 'none given'}; "
                          f"choose from {', '.join(TRAINED + tuple(BASELINES))}")
    from n2s_tf import evaluate, synthetic

    start = time.time()
    atoms = synthetic.read_atoms(FLAGS.pdb)
    plot_snr = min(snrs, key=lambda s: abs(np.log(s / FLAGS.plot_snr)))
    baselines = [evaluate.baseline_denoiser(BASELINES[m][0], name=m, **BASELINES[m][1])
                 for m in methods if m in BASELINES]
    rows, clean_at_plot = [], None
    with tempfile.TemporaryDirectory(prefix="snr_sweep_") as work:
        for snr in snrs:
            mic = synthetic.simulate_micrograph(
                atoms, (FLAGS.size, FLAGS.size), n_particles=FLAGS.particles, pixel_size=FLAGS.pixel_size,
                defocus_um=FLAGS.defocus, snr=snr, seed=FLAGS.seed, pair=True)
            folder = os.path.join(work, f"snr{snr:g}")
            for half, key in (("a", "noisy"), ("b", "noisy_b")):
                os.makedirs(os.path.join(folder, half))
                np.save(os.path.join(folder, half, "micrograph.npy"), mic[key])
            denoisers, train_seconds = [], {}
            for method in (m for m in methods if m in TRAINED):
                tick = time.time()
                denoisers.append(train_model(method, os.path.join(folder, "a"), os.path.join(folder, "b"),
                                             os.path.join(folder, "runs", method)))
                train_seconds[method] = time.time() - tick
                print(f"snr {snr:g}: {method} trained {FLAGS.steps} steps in {train_seconds[method]:.0f} s",
                      file=sys.stderr, flush=True)
            scored = evaluate.evaluate([("micrograph", mic["noisy"], mic["clean"])], denoisers + baselines,
                                       standardized=True, pixel_size=FLAGS.pixel_size,
                                       keep_outputs=snr == plot_snr)
            for row in scored:
                row.update(snr=snr, train_seconds=train_seconds.get(row["method"], 0.0))
            rows += scored
            if snr == plot_snr:
                clean_at_plot = mic["clean"]
            print(f"snr {snr:g} done, {time.time() - start:.0f} s elapsed", file=sys.stderr, flush=True)

    summary = evaluate.summarize(rows, by=("snr", "method"))
    training = (f"; {FLAGS.steps} steps of {FLAGS.network}, batch {FLAGS.batch_size}"
                if any(m in TRAINED for m in methods) else "")
    print(f"\n{FLAGS.size}x{FLAGS.size} px at {FLAGS.pixel_size:g} A/px, {FLAGS.particles} particles, "
          f"defocus {FLAGS.defocus:g} um{training}; scored standardized against the clean image")
    print(evaluate.format_table(summary, columns=("psnr", "cc", "mean_frc", "res_0143")))
    train_total = sum(r["train_seconds"] for r in rows)
    print(f"\ntotal {time.time() - start:.0f} s, of which training {train_total:.0f} s")

    out = FLAGS.out
    os.makedirs(out, exist_ok=True)
    for ext in ("csv", "json"):
        evaluate.write_table(rows, os.path.join(out, f"metrics.{ext}"))
    for metric in ("psnr", "cc", "mean_frc"):
        evaluate.plot_metric_vs_snr(summary, metric, os.path.join(out, f"{metric}_vs_snr.png"))
    at_plot = [r for r in rows if r["snr"] == plot_snr]
    evaluate.plot_frc(evaluate.frc_curves(at_plot), os.path.join(out, "frc.png"),
                      title=f"FRC with the clean image, SNR {plot_snr:g}")
    outputs = {r["method"]: r["output"] for r in at_plot}
    captions = {r["method"]: f"PSNR {r['psnr']:.2f}  CC {r['cc']:.3f}" for r in at_plot}
    noisy = outputs.pop(evaluate.NOISY)
    evaluate.plot_panels(noisy, outputs, clean_at_plot, os.path.join(out, "panels.png"),
                         crop=FLAGS.size, titles=captions)
    print(f"wrote {out}/metrics.csv, metrics.json, psnr/cc/mean_frc_vs_snr.png, frc.png, panels.png "
          f"(plots at SNR {plot_snr:g})")


if __name__ == "__main__":
    run_main(main)
