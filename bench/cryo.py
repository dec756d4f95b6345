"""Cryo-EM denoising on simulated micrographs with a known clean image, against the field.

    python bench/cryo.py --out=runs/cryo                 # SNR 0.05, 0.1, 0.3; peers included
    python bench/cryo.py --snrs=sweep --size=512 --particles=10 --steps=300 \
        --methods=n2n,n2v,n2s,n2sp,lowpass0.05,lowpass0.001,gaussian2 --out=runs/snr_sweep

For each SNR one micrograph of randomly oriented copies of the PDB model is simulated
(CTF-modulated, white noise, or correlated noise with --noise_lag1 (its autocorrelation at
lag 1, as detector blur and Fourier cropping give; synthetic.correlated_noise); with an
independent second noise draw for N2N, like the even/odd frame sums of a movie).

    python bench/cryo.py --noise_lag1=0.6 --methods=gaussian2,cryoem_n2n,n2n_halves,cryoem,topaz \
        --out=runs/cryo_lag0.6                              # correlated noise, a few minutes

The column resid_lag1 is the autocorrelation at lag 1 of each residual (input - output), measured
as n2s_tf.noise measures an image's noise; on the noisy row it is that of the true noise
(noisy - clean). A denoiser that removes the correlated part of the noise leaves a residual as
correlated as the noise. Methods, all scored standardized against the clean image
(PSNR, cross-correlation, FRC; n2s_tf.evaluate):
- n2s_tf trained from scratch on the micrograph (n2n on the pair; n2v, n2s, n2sp on the
  noisy image alone; n2sp_whiten: n2sp with train.py --whiten=auto, the correlated-noise
  method; n2v_struct, n2sp_struct: a structured blind spot instead, train.py --mask_span=1,
  the 3 x 3 box around each masked pixel hidden, on the raw micrograph), --steps each;
  supervised: n2t on SUPERVISED_MICROGRAPHS other micrographs of the
  same simulation (same noise, other seeds) and their clean images, the upper bound;
- cryoem_n2n: the shipped Noise2Noise micrograph model on the whole micrograph,
  test_single.py's default for MRC micrographs;
- the shipped self-supervised cryo-EM model as it is (cryoem: whitening correlated noise,
  as test_single.py does for it), with 8-fold test-time augmentation (cryoem_tta), without whitening
  (cryoem_nowhiten), after --adapt_steps of self-supervised fine-tuning on the micrograph
  (cryoem_adapt), and the shipped general model (general);
- n2n_halves: a Noise2Noise model (--n2n_model, default the shipped cryoem_n2n) on two
  halves of the dose, each the clean image with its own noise at half the SNR, denoised and
  calibrated against each other (n2s_tf.denoise_halves): the even/odd route, same total dose;
- classical filters; Topaz-Denoise's pretrained model (topaz) and CAREamics' Noise2Void
  trained --steps on the micrograph (careamics_n2v; careamics_structn2v with its structN2V
  mask, STRUCT_MASK), run in their own virtual environment by bench/peers.py.
Writes metrics.csv / metrics.json, {psnr,cc,mean_frc}_vs_snr.png, and frc.png /
panels.png at the SNR nearest --plot_snr to --out.
"""

import os
import sys
import tempfile
import time

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import auto_if_unset, parse_network_args, run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

TRAINED = ("n2n", "n2v", "n2s", "n2sp", "n2sp_whiten", "n2v_struct", "n2sp_struct", "supervised")
TRAIN_OPTIONS = {"n2sp_whiten": dict(model="n2sp", whiten="auto"), "supervised": dict(model="n2t"),
                 "n2v_struct": dict(model="n2v", mask_span=1), "n2sp_struct": dict(model="n2sp", mask_span=1)}
SUPERVISED_MICROGRAPHS = 4  # training micrographs of the supervised row, seeds --seed + 1000 + k
SHIPPED = {"cryoem": "cryoem", "cryoem_tta": "cryoem", "cryoem_nowhiten": "cryoem", "cryoem_adapt": "cryoem",
           "cryoem_n2n": "cryoem_n2n", "general": "general"}  # method -> shipped model name
SHIPPED_OPTIONS = {"cryoem_tta": {"tta": True}, "cryoem_nowhiten": {"whiten": False}}  # api.denoise options
PEERS = ("topaz", "careamics_n2v", "careamics_structn2v")
HALVES = ("n2n_halves",)  # a Noise2Noise model (--n2n_model) on even/odd halves of the dose
# structN2V's mask: the neighbours within 1 px along both axes and the diagonals, where the
# correlated noise of --noise_lag1 (separable, lag 1 along each axis) is correlated with the pixel.
STRUCT_MASK = dict(struct_axes="square", struct_span=3)
# Bench name -> (n2s_tf.baselines name, parameters).
BASELINES = {
    "lowpass0.05": ("fourier_lowpass", {"cutoff": 0.05}),  # cycles/pixel
    "lowpass0.001": ("fourier_lowpass", {"cutoff": 0.001}),
    "gaussian2": ("gaussian", {"sigma": 2.0}),
}
ALL_METHODS = TRAINED + tuple(SHIPPED) + PEERS + HALVES + tuple(BASELINES)
SWEEP_SNRS = np.geomspace(0.01, 0.5, 10)

FLAGS = flags.FLAGS
# absl.app defines --pdb as an alias of --pdb_post_mortem; here --pdb is the atomic model.
if "pdb" in FLAGS:
    delattr(FLAGS, "pdb")
flags.DEFINE_string("pdb", os.path.join(ROOT, "..", "shared", "data", "6z6u.pdb"), "atomic model (PDB or mmCIF)")
flags.DEFINE_string("out", "runs/cryo", "folder for the tables and plots")
flags.DEFINE_string("snrs", "0.05,0.1,0.3", "comma-separated SNRs, or 'sweep' (10 log-spaced from 0.01 to 0.5)")
flags.DEFINE_string("methods", "gaussian2,topaz,careamics_n2v,cryoem,cryoem_adapt,n2sp", "comma-separated methods")
flags.DEFINE_integer("steps", 1000, "training steps of every method trained from scratch (n2s_tf and CAREamics)")
flags.DEFINE_integer("pro_steps", None, "n2sp: steps with the learned noise level (default: half of --steps, "
                                        "at most 500)")
flags.DEFINE_integer("adapt_steps", 300, "cryoem_adapt: fine-tuning steps on the micrograph")
flags.DEFINE_string("adapt_method", "n2s", "cryoem_adapt: fine-tuning loss (n2s, n2sp, n2v, n2v2)")
flags.DEFINE_string("precision", "auto", "shipped models' inference precision (as test_single.py's --precision)")
flags.DEFINE_string("network", "unet", "network for every trained method")
flags.DEFINE_string("network_args", "", "network options, e.g. depth=2,base_filters=16")
flags.DEFINE_string("mixed_precision", "float32", "n2s_tf training precision: float32 or bfloat16")
flags.DEFINE_integer("batch_size", 16, "batch size")
flags.DEFINE_integer("patch_size", 64, "training patch side")
flags.DEFINE_integer("size", 1024, "micrograph side in pixels")
flags.DEFINE_float("pixel_size", 1.5, "Angstrom per pixel")
flags.DEFINE_float("defocus", 1.5, "defocus in micrometres (underfocus)")
flags.DEFINE_float("noise_lag1", 0.0, "noise autocorrelation at lag 1 (0: white; 0.3 and 0.6: correlated)")
flags.DEFINE_integer("particles", 40, "particles per micrograph")
flags.DEFINE_integer("seed", 0, "simulation and training seed")
flags.DEFINE_float("plot_snr", 0.05, "FRC curves and panels are drawn at the SNR nearest this")
flags.DEFINE_boolean("tta", False, "n2s_tf models: 8-fold test-time augmentation")
flags.DEFINE_string("n2n_model", None, "n2n_halves: an exported Noise2Noise model (default: the shipped "
                                       "cryoem_n2n), run on two halves of the micrograph's dose (each at half "
                                       "its SNR, their own noise) by n2s_tf.denoise_halves")
flags.DEFINE_boolean("calibrate", None, "n2s_tf models: Fourier ring calibration (test_single.py --calibrate; "
                     "unset: its default, blind-spot models on white noise of one level)")


def parse_snrs(text):
    if text == "sweep":
        return list(SWEEP_SNRS)
    try:
        snrs = [float(v) for v in text.split(",")]
    except ValueError:
        snrs = []
    if not snrs or min(snrs) <= 0:
        raise ConfigError(f"--snrs={text!r} must be positive numbers separated by commas, or 'sweep'")
    return snrs


def simulate(atoms, snr, seed):
    from n2s_tf import synthetic

    return synthetic.simulate_micrograph(
        atoms, (FLAGS.size, FLAGS.size), n_particles=FLAGS.particles, pixel_size=FLAGS.pixel_size,
        defocus_um=FLAGS.defocus, snr=snr, seed=seed, pair=True, noise_lag1=FLAGS.noise_lag1)


def supervised_pairs(atoms, snr, folder):
    """Noisy and clean micrographs of the benchmark's simulation at other seeds: the (data,
    target) folders of the supervised row."""
    for k in range(SUPERVISED_MICROGRAPHS):
        mic = simulate(atoms, snr, FLAGS.seed + 1000 + k)
        for kind, key in (("noisy", "noisy"), ("clean", "clean")):
            os.makedirs(os.path.join(folder, kind), exist_ok=True)
            np.save(os.path.join(folder, kind, f"mic{k}.npy"), mic[key])
    return os.path.join(folder, "noisy"), os.path.join(folder, "clean")


def train_model(method, noisy_dir, other_dir, model_dir):
    """Train one method on the micrograph (N2N: against its other half; supervised: on the
    pairs in noisy_dir, other_dir); its Denoiser."""
    from n2s_tf import api, evaluate

    steps = FLAGS.steps
    pro_steps = FLAGS.pro_steps if FLAGS.pro_steps is not None else min(steps // 2, 500)
    options = TRAIN_OPTIONS.get(method, dict(model=method))
    result = api.train(**options, data=noisy_dir, target=other_dir if method in ("n2n", "supervised") else None,
                       steps=steps, pro_steps=pro_steps, network=FLAGS.network,
                       network_args=parse_network_args(FLAGS.network_args), batch_size=FLAGS.batch_size,
                       patch_size=(FLAGS.patch_size,) * 2, seed=FLAGS.seed, mixed_precision=FLAGS.mixed_precision,
                       checkpoint_every=steps, model_dir=model_dir)
    return evaluate.model_denoiser(result["export_dir"], name=method, tta=FLAGS.tta,
                                   calibrate=auto_if_unset(FLAGS.calibrate))


def denoise_halves(clean, snr):
    """n2n_halves: two halves of the dose (the clean image plus noise at snr / 2 each, seeds
    apart from the micrograph's) through --n2n_model and n2s_tf.denoise_halves."""
    from n2s_tf import api, synthetic

    rng = np.random.default_rng(FLAGS.seed + 2000)
    halves = [synthetic.construct_image_with_SNR(clean, snr / 2, rng, FLAGS.noise_lag1) for _ in "ab"]
    model = api.load_model(FLAGS.n2n_model or str(api.SHIPPED_MODELS / "cryoem_n2n"), precision=FLAGS.precision)
    return api.denoise_halves(*halves, model, tta=FLAGS.tta)


def shipped_denoiser(method):
    """A shipped model, as it is or fine-tuned on each micrograph before denoising it."""
    from n2s_tf import api, evaluate

    model = api.load_model(str(api.SHIPPED_MODELS / SHIPPED[method]), precision=FLAGS.precision)
    adapt = FLAGS.adapt_steps if method == "cryoem_adapt" else 0
    options = dict(dict(tta=FLAGS.tta, calibrate=auto_if_unset(FLAGS.calibrate)), **SHIPPED_OPTIONS.get(method, {}))
    return evaluate.model_denoiser(model, name=method, adapt_steps=adapt, adapt_method=FLAGS.adapt_method,
                                   **options)


def run_peer(method, noisy_path, work):
    """A peer's output for the micrograph in noisy_path, and its wall seconds (training included)."""
    import peers

    out = os.path.join(work, f"{method}.npy")
    result_path = os.path.join(work, f"{method}.json")
    if method == "topaz":
        result = peers.run_peer("topaz_denoise", inputs=noisy_path, outputs=out, result=result_path)
        seconds = result["load_seconds"] + result["predict_seconds"]
    else:
        mask = STRUCT_MASK if method == "careamics_structn2v" else {}
        result = peers.run_peer("careamics_n2v", inputs=noisy_path, outputs=out, steps=FLAGS.steps,
                                batch_size=FLAGS.batch_size, patch_size=FLAGS.patch_size, seed=FLAGS.seed,
                                result=result_path, **mask)
        seconds = result["train_seconds"] + result["predict_seconds"]
    return np.load(out), seconds


def main(argv):
    snrs = parse_snrs(FLAGS.snrs)
    methods = [m for m in FLAGS.methods.split(",") if m]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: {unknown[0] if unknown else 'none given'}; choose from {', '.join(ALL_METHODS)}")
    # After the flags: a checkout without ../shared still gets its flag errors first.
    if not os.path.isfile(FLAGS.pdb):
        raise ConfigError(f"--pdb={FLAGS.pdb}: no such file (a PDB/mmCIF model is needed to simulate micrographs)")
    from n2s_tf import evaluate, noise, reports, synthetic
    from n2s_tf.evaluate import Denoiser

    start = time.time()
    atoms = synthetic.read_atoms(FLAGS.pdb)
    plot_snr = min(snrs, key=lambda s: abs(np.log(s / FLAGS.plot_snr)))
    ready = [evaluate.baseline_denoiser(BASELINES[m][0], name=m, **BASELINES[m][1]) for m in methods if m in BASELINES]
    ready += [shipped_denoiser(m) for m in methods if m in SHIPPED]
    rows, clean_at_plot = [], None
    with tempfile.TemporaryDirectory(prefix="cryo_bench_") as work:
        for snr in snrs:
            mic = simulate(atoms, snr, FLAGS.seed)
            folder = os.path.join(work, f"snr{snr:g}")
            for half, key in (("a", "noisy"), ("b", "noisy_b")):
                os.makedirs(os.path.join(folder, half))
                np.save(os.path.join(folder, half, "micrograph.npy"), mic[key])
            denoisers, wall_seconds = [], {}
            for method in methods:
                tick = time.time()
                if method in TRAINED:
                    data = (supervised_pairs(atoms, snr, os.path.join(folder, "supervised")) if method == "supervised"
                            else (os.path.join(folder, "a"), os.path.join(folder, "b")))
                    denoisers.append(train_model(method, *data, os.path.join(folder, "runs", method)))
                elif method in HALVES:
                    output = denoise_halves(mic["clean"], snr)
                    denoisers.append(Denoiser(method, lambda x, output=output: output))
                elif method in PEERS:
                    output, wall_seconds[method] = run_peer(method, os.path.join(folder, "a", "micrograph.npy"),
                                                            folder)
                    denoisers.append(Denoiser(method, lambda x, output=output: output))
                else:
                    continue
                print(f"snr {snr:g}: {method} ready in {time.time() - tick:.0f} s", file=sys.stderr, flush=True)
                wall_seconds.setdefault(method, time.time() - tick)
            scored = evaluate.evaluate([("micrograph", mic["noisy"], mic["clean"])], ready + denoisers,
                                       standardized=True, pixel_size=FLAGS.pixel_size, keep_outputs=True)
            for row in scored:
                row.update(snr=snr, seconds=row["seconds"] + wall_seconds.get(row["method"], 0.0))
                residual = mic["noisy"] - (mic["clean"] if row["method"] == evaluate.NOISY else row["output"])
                row["resid_lag1"] = noise.noise_report(residual)["lag1"]
                if snr != plot_snr:
                    del row["output"]
            rows += scored
            if snr == plot_snr:
                clean_at_plot = mic["clean"]
            print(f"snr {snr:g} done, {time.time() - start:.0f} s elapsed", file=sys.stderr, flush=True)

    summary = evaluate.summarize(rows, by=("snr", "method"))
    for entry in summary:  # one micrograph per SNR: its residual's lag 1
        entry["resid_lag1"] = next(r["resid_lag1"] for r in rows
                                   if (r["snr"], r["method"]) == (entry["snr"], entry["method"]))
    print(f"\n{FLAGS.size}x{FLAGS.size} px at {FLAGS.pixel_size:g} A/px, {FLAGS.particles} particles, "
          f"{os.path.basename(FLAGS.pdb)}, noise lag 1 {FLAGS.noise_lag1:g}, defocus {FLAGS.defocus:g} um; "
          f"trained methods {FLAGS.steps} steps, batch {FLAGS.batch_size}, "
          f"{FLAGS.patch_size}x{FLAGS.patch_size} patches; adapt {FLAGS.adapt_steps} steps; "
          f"scored standardized against the clean image; seconds = wall time incl. training")
    columns = ("psnr", "cc", "mean_frc", "frc_soft", "res_0143", "resid_lag1", "seconds")
    print(reports.format_table(summary, columns=columns))
    print(f"\ntotal {time.time() - start:.0f} s")

    out = FLAGS.out
    os.makedirs(out, exist_ok=True)
    for ext in ("csv", "json"):
        reports.write_table(rows, os.path.join(out, f"metrics.{ext}"))
    if len(snrs) > 1:
        for metric in ("psnr", "cc", "mean_frc"):
            reports.plot_metric_vs_snr(summary, metric, os.path.join(out, f"{metric}_vs_snr.png"))
    at_plot = [r for r in rows if r["snr"] == plot_snr]
    reports.plot_frc(evaluate.frc_curves(at_plot), os.path.join(out, "frc.png"),
                      title=f"FRC with the clean image, SNR {plot_snr:g}")
    outputs = {r["method"]: r["output"] for r in at_plot}
    captions = {r["method"]: f"PSNR {r['psnr']:.2f}  CC {r['cc']:.3f}" for r in at_plot}
    noisy = outputs.pop(evaluate.NOISY)
    reports.plot_panels(noisy, outputs, clean_at_plot, os.path.join(out, "panels.png"),
                         crop=min(FLAGS.size, 512), titles=captions)
    print(f"wrote {out}/metrics.csv, metrics.json, plots (panels and FRC at SNR {plot_snr:g})")


if __name__ == "__main__":
    run_main(main)
