"""Cryo-ET denoising on simulated tomograms with a known noiseless reconstruction.

    python bench/tomo.py                 # 160x256x256 at 8 A, two doses, all methods: hours on 2 cores
    python bench/tomo.py --size=48,128,128 --doses=60 --steps=200 --methods=gaussian,n2n   # minutes

For each total dose one tomogram of two particle kinds in ice is simulated
(n2s_tf.synthetic_tomogram: dose-symmetric tilt series +-60 degrees by 3 unless --tilt_range and
--tilt_step say otherwise, per-tilt CTF, Poisson counting, even/odd halves, weighted
back-projection). Methods, scored standardized against the noiseless reconstruction with the
same missing wedge (PSNR, CC, FSC mean = FSC-AUC):
- gaussian: a 3D Gaussian filter of --gaussian_sigma voxels on the full-dose tomogram;
- n2n: n2s_tf Noise2Noise trained --steps on the even/odd halves, both halves denoised and
  calibrated against each other per Fourier shell (n2s_tf.combine_halves, test_single.py's
  --input_b route); n2n_plain: the plain mean of the two (the cryoCARE route);
- single: the route without halves, the shipped tomogram model (cryoet_n2n, Noise2Noise on
  simulated even/odd tomograms of other seeds: trained_models/README.md) on the full-dose tomogram,
  as test_single.py runs it on an MRC volume without --model; --single_model to give another;
- shipped_halves: that model on the even/odd halves, both denoised and calibrated (test_single.py
  --input_b on an MRC volume without --model);
- single_n2s: N2S trained --steps on the full-dose tomogram alone, whitened by its own noise
  spectrum (train.py --whiten=on), and denoised so (test_single.py whitens for such a model);
- topaz3d: Topaz-Denoise's pretrained 3D model (unet-3d) on the full-dose tomogram, run in the
  peers venv by bench/peers.py;
- cryocare: cryoCARE 0.3.0 trained on the halves with its recommended network (72^3 patches, depth 3,
  16 first filters, lr 4e-4) and the same budget in training voxels as n2n (or --cryocare_steps),
  run in its own venv (bench/peers.py). cryoCARE needs every axis longer than twice its patch.
Writes metrics.csv / metrics.json and slices.png (XY and XZ central slices per method) to --out.
Scores are of the volumes (a Fourier shell correlation: FSC-AUC is its mean up to Nyquist).
"""

import os
import sys
import tempfile
import time

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from n2s_tf.cli.common import parse_floats, parse_ints, parse_network_args, run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

DATA = os.path.join(ROOT, "..", "shared", "data")
METHODS = ("gaussian", "n2n", "single", "shipped_halves", "single_n2s", "topaz3d", "cryocare")

FLAGS = flags.FLAGS
flags.DEFINE_string("models", f"{DATA}/6z6u.pdb,{DATA}/3jb9.cif", "comma-separated atomic models (PDB/mmCIF)")
flags.DEFINE_string("out", "runs/tomo", "folder for the tables and slices")
flags.DEFINE_string("size", "160,256,256", "tomogram size Z,Y,X in voxels")
flags.DEFINE_float("pixel_size", 8.0, "Angstrom per voxel")
flags.DEFINE_integer("particles", 40, "particles per tomogram (kinds in turn)")
flags.DEFINE_string("doses", "60,120", "total doses of the tilt series in e/A^2")
flags.DEFINE_float("tilt_range", 60.0, "tilts from -range to +range degrees")
flags.DEFINE_float("tilt_step", 3.0, "tilt step in degrees")
flags.DEFINE_float("contrast", 0.1, "weak-phase contrast of the projections (see simulate_tomogram)")
flags.DEFINE_string("methods", ",".join(METHODS), f"comma-separated methods: {', '.join(METHODS)}")
flags.DEFINE_float("gaussian_sigma", 1.5, "gaussian: sigma in voxels")
flags.DEFINE_integer("steps", 1000, "n2n: training steps")
flags.DEFINE_string("patch_size", "32,64,64", "n2n: training patch Z,Y,X")
flags.DEFINE_integer("batch_size", 4, "n2n: batch size")
flags.DEFINE_string("network", "unet", "n2n: network")
flags.DEFINE_string("network_args", "depth=2,base_filters=16", "n2n: network options")
flags.DEFINE_string("mixed_precision", "bfloat16", "n2n: training precision")
flags.DEFINE_integer("cryocare_patch", 72, "cryocare: patch side (its recommendation)")
flags.DEFINE_integer("cryocare_epochs", 5, "cryocare: epochs")
flags.DEFINE_integer("cryocare_steps", None, "cryocare: steps per epoch, batch 16 (default: n2n's budget in "
                                             "training voxels)")
flags.DEFINE_string("single_model", None, "single: the exported model (default: the shipped tomogram model)")
flags.DEFINE_integer("seed", 0, "simulation and training seed")
flags.DEFINE_string("save_halves", None, "n2n: also save the halves, their outputs and the reference (.npy) here")
flags.DEFINE_boolean("save_outputs", False, "also save every method's output and the reference (.npy) in --out")
flags.DEFINE_boolean("n2n_other_tomogram", False, "n2n: train on the halves of another tomogram of the same "
                                                  "settings (seed + 100) instead of the scored one's")


def simulate(dose, seed=None):
    from n2s_tf import synthetic_tomogram

    models = [m for m in FLAGS.models.split(",") if m]
    missing = [m for m in models if not os.path.isfile(m)]
    if missing or not models:
        raise ConfigError(f"--models: no such file {missing[0] if missing else '(none given)'}")
    return synthetic_tomogram.simulate_tomogram(
        models, shape=parse_ints(FLAGS.size, "size"), pixel_size=FLAGS.pixel_size, n_particles=FLAGS.particles,
        total_dose=dose, contrast=FLAGS.contrast, tilt_range=FLAGS.tilt_range, tilt_step=FLAGS.tilt_step,
        seed=FLAGS.seed if seed is None else seed)


def _train(work, **fields):
    """An n2s_tf model trained on 3D patches as the flags say; (loaded model, training seconds)."""
    from n2s_tf import api

    tick = time.time()
    result = api.train(ndim=3, steps=FLAGS.steps, network=FLAGS.network,
                       network_args=parse_network_args(FLAGS.network_args), batch_size=FLAGS.batch_size,
                       patch_size=parse_ints(FLAGS.patch_size, "patch_size"), seed=FLAGS.seed,
                       mixed_precision=FLAGS.mixed_precision, checkpoint_every=FLAGS.steps,
                       model_dir=os.path.join(work, "run"), **fields)
    return api.load_model(result["export_dir"]), time.time() - tick


def train_n2n(tomogram, work):
    """Noise2Noise on the even/odd halves, both halves denoised and combined; (output, training
    seconds, denoising seconds)."""
    from n2s_tf import api

    source = simulate(tomogram["dose"], FLAGS.seed + 100) if FLAGS.n2n_other_tomogram else tomogram
    for half in ("even", "odd"):
        os.makedirs(os.path.join(work, half), exist_ok=True)
        np.save(os.path.join(work, half, "tomo.npy"), source[half][..., None])
    model, train_seconds = _train(work, model="n2n", data=os.path.join(work, "even"), target=os.path.join(work, "odd"))
    tick = time.time()
    even, odd = api.denoise(tomogram["even"], model), api.denoise(tomogram["odd"], model)
    combined = api.combine_halves(tomogram["even"], tomogram["odd"], even.copy(), odd, ndim=3)
    seconds = time.time() - tick
    EXTRA["n2n_plain"] = (even + odd) / 2
    if FLAGS.save_halves:  # for studying the combination: the halves, their outputs, the reference
        os.makedirs(FLAGS.save_halves, exist_ok=True)
        for name, array in (("even", tomogram["even"]), ("odd", tomogram["odd"]), ("even_out", even),
                            ("odd_out", odd), ("clean", tomogram["clean"])):
            np.save(os.path.join(FLAGS.save_halves, f"dose{tomogram['dose']:g}_{name}.npy"), array)
    return combined, train_seconds, seconds


def _shipped():
    from n2s_tf import api

    return api.load_model(FLAGS.single_model or str(api.SHIPPED_MODELS / api.DEFAULT_MODELS["tomogram"]))


def shipped_single(tomogram, work):
    """The shipped tomogram model (or --single_model) on the full-dose tomogram; (output, 0
    training seconds, denoising seconds)."""
    from n2s_tf import api

    model, tick = _shipped(), time.time()
    return api.denoise(tomogram["noisy"], model), 0.0, time.time() - tick


def shipped_halves(tomogram, work):
    """The same model on both halves, calibrated against each other; (output, 0, seconds)."""
    from n2s_tf import api

    model, tick = _shipped(), time.time()
    return api.denoise_halves(tomogram["even"], tomogram["odd"], model), 0.0, time.time() - tick


def train_single(tomogram, work):
    """N2S on the full-dose tomogram alone, whitened (the route without halves); (output, training
    seconds, denoising seconds)."""
    from n2s_tf import api

    volume = tomogram["noisy"]
    np.save(os.path.join(work, "tomo.npy"), volume[..., None])
    model, train_seconds = _train(work, model="n2s", data=os.path.join(work, "tomo.npy"), whiten="on")
    tick = time.time()
    denoised = api.denoise(volume, model)  # whitens: the model was trained whitened
    return denoised, train_seconds, time.time() - tick


def topaz3d(volume, work):
    import peers

    source, out = os.path.join(work, "topaz_in.npy"), os.path.join(work, "topaz_out.npy")
    np.save(source, volume)
    result = peers.run_peer("topaz_denoise", dims=3, inputs=source, outputs=out,
                            result=os.path.join(work, "topaz.json"))
    return np.load(out), result["load_seconds"] + result["predict_seconds"]


def cryocare(tomogram, work):
    """cryoCARE trained and run on the halves by its own programs; (output, training seconds with
    its patch extraction, prediction seconds)."""
    import peers

    paths = {half: os.path.join(work, f"{half}.npy") for half in ("even", "odd")}
    for half, path in paths.items():
        np.save(path, tomogram[half])
    batch, patch = 16, FLAGS.cryocare_patch
    steps = FLAGS.cryocare_steps
    if steps is None:  # the n2n run's voxels seen in training, spread over the epochs
        n2n_voxels = FLAGS.steps * FLAGS.batch_size * np.prod(parse_ints(FLAGS.patch_size, "patch_size"))
        steps = max(1, int(round(n2n_voxels / (FLAGS.cryocare_epochs * batch * patch**3))))
    out = os.path.join(work, "cryocare_out.npy")
    result = peers.run_peer("cryocare_n2n", venv="cryocare", even=paths["even"], odd=paths["odd"], output=out,
                            result=os.path.join(work, "cryocare.json"), voxel=FLAGS.pixel_size, patch=patch,
                            epochs=FLAGS.cryocare_epochs, steps_per_epoch=steps, batch_size=batch)
    return np.load(out), result["extract_seconds"] + result["train_seconds"], result["predict_seconds"]


# Their rows also give training and denoising seconds.
TRAINED = {"n2n": train_n2n, "single": shipped_single, "shipped_halves": shipped_halves, "single_n2s": train_single,
           "cryocare": cryocare}
EXTRA = {}  # more rows from a trained method's outputs: name -> output


def computed(name, volume):
    """A Denoiser that returns an output already computed, with the channel axis evaluate wants."""
    from n2s_tf.evaluate import Denoiser

    return Denoiser(name, lambda x: volume[..., None])


def central_slices(volume):
    """The XY slice at the middle depth above the XZ slice at the middle row: one 2D image."""
    depth, height, _ = volume.shape
    return np.concatenate([volume[depth // 2], volume[:, height // 2, :]], axis=0)


def main(argv):
    from n2s_tf import evaluate, reports

    methods = [m for m in FLAGS.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: {unknown[0] if unknown else 'none given'}; choose from {', '.join(METHODS)}")
    doses = parse_floats(FLAGS.doses, "doses")
    rows, start = [], time.time()
    os.makedirs(FLAGS.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tomo_bench_") as work:
        for dose in doses:
            tick = time.time()
            tomogram = dict(simulate(dose), dose=dose)
            print(f"dose {dose:g}: simulated in {time.time() - tick:.0f} s", file=sys.stderr, flush=True)
            denoisers, seconds = [], {}
            for method in methods:
                tick = time.time()
                folder = os.path.join(work, f"dose{dose:g}", method)
                os.makedirs(folder, exist_ok=True)
                if method == "gaussian":
                    denoisers.append(evaluate.baseline_denoiser("gaussian", name="gaussian",
                                                                sigma=FLAGS.gaussian_sigma))
                    continue
                if method in TRAINED:
                    output, seconds[f"{method}_train"], seconds[f"{method}_denoise"] = TRAINED[method](tomogram, folder)
                else:
                    output, _ = topaz3d(tomogram["noisy"], folder)
                seconds[method] = time.time() - tick
                denoisers += [computed(method, output)] + [computed(name, extra) for name, extra in EXTRA.items()]
                EXTRA.clear()
                print(f"dose {dose:g}: {method} in {seconds[method]:.0f} s", file=sys.stderr, flush=True)
            # With their channel axis: evaluate takes a 3D array as a 2D image with channels.
            scored = evaluate.evaluate([("tomogram", tomogram["noisy"][..., None], tomogram["clean"][..., None])],
                                       denoisers, standardized=True, pixel_size=FLAGS.pixel_size, keep_outputs=True)
            for row in scored:
                row.update(dose=dose, seconds=row["seconds"] + seconds.get(row["method"], 0.0))
                if row["method"] in TRAINED:
                    row["train_seconds"] = seconds[f"{row['method']}_train"]
                    row["denoise_seconds"] = seconds[f"{row['method']}_denoise"]
            rows += scored
            if FLAGS.save_outputs:
                for r in scored:
                    np.save(os.path.join(FLAGS.out, f"dose{dose:g}_{r['method']}.npy"), r["output"][..., 0])
                np.save(os.path.join(FLAGS.out, f"dose{dose:g}_clean.npy"), tomogram["clean"])
            outputs = {r["method"]: central_slices(r["output"][..., 0]) for r in scored}
            captions = {r["method"]: f"PSNR {r['psnr']:.2f}  FSC {r['mean_frc']:.3f}" for r in scored}
            reports.plot_panels(outputs.pop(evaluate.NOISY), outputs, central_slices(tomogram["clean"]),
                                os.path.join(FLAGS.out, f"slices_dose{dose:g}.png"), crop=10**6, titles=captions)

    summary = evaluate.summarize(rows, by=("dose", "method"))
    for row in summary:
        row["snr"] = row.pop("dose")  # format_table prints its first key column as "snr"
    print(f"\n{FLAGS.size} voxels (Z,Y,X) at {FLAGS.pixel_size:g} A, {FLAGS.particles} particles, "
          f"tilts +-{FLAGS.tilt_range:g} by {FLAGS.tilt_step:g} degrees; n2n {FLAGS.steps} steps, "
          f"batch {FLAGS.batch_size}, patches {FLAGS.patch_size}, "
          f"{FLAGS.network} {FLAGS.network_args}; scored standardized against the noiseless reconstruction; "
          f"'snr' column = total dose in e/A^2; seconds = wall time incl. training")
    print(reports.format_table(summary, columns=("psnr", "cc", "mean_frc", "frc_soft", "seconds")))
    for ext in ("csv", "json"):
        reports.write_table([{k: v for k, v in r.items() if k != "output"} for r in rows],
                            os.path.join(FLAGS.out, f"metrics.{ext}"))
    print(f"total {time.time() - start:.0f} s; wrote {FLAGS.out}/metrics.csv, metrics.json, slices_dose*.png")


if __name__ == "__main__":
    run_main(main)
