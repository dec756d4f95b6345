"""Write simulated micrographs (noisy, and their clean images) for training or checks.

    python bench/simulate_micrographs.py --snrs=0.03,0.05,0.1,0.2,0.4 --seed=100 --out=runs/cryo_train
    python bench/simulate_micrographs.py --detectors=white,lag0.35,lag0.55 --count=24 \
        --pdb=../shared/data/6z6u.pdb,../shared/data/3jb9.cif,../shared/data/6qt9.cif \
        --defocus=0.8,2.5 --ice_nm=0,60 --seed=200 --out=runs/cryo_movies     # about 10 min

Without --detectors: one 1024x1024 micrograph per SNR of randomly oriented copies of the
atomic model (CTF at --defocus, 1.5 A/px, white noise or the filtered noise of --noise_lag1), as
in bench/cryo.py, with a second noise draw of the same SNR: --out/even and --out/odd hold the
Noise2Noise pair. With
--detectors: --count micrographs from counting-detector movies (synthetic.simulate_movie,
one of synthetic.DETECTORS each, from white to correlated noise), whose even/odd frame sums
also go to --out/even and --out/odd (Noise2Noise pairs). Micrograph i uses seed --seed + i,
SNR i of --snrs (cycled), detector i and model i // len(detectors) (cycled), a defocus and an
ice thickness drawn from their ranges: seeds far from bench/cryo.py's (0, 1, 2) keep training
and test apart. Writes <name>.npy (noisy) to --out and the clean images to --out/clean/.
"""

import os
import sys

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

FLAGS = flags.FLAGS
if "pdb" in FLAGS:  # absl.app's --pdb (post-mortem) alias; here --pdb is the atomic model
    delattr(FLAGS, "pdb")
flags.DEFINE_string("pdb", os.path.join(ROOT, "..", "shared", "data", "6z6u.pdb"),
                    "atomic model(s) (PDB or mmCIF), comma-separated")
flags.DEFINE_string("snrs", "0.03,0.05,0.1,0.2,0.4", "comma-separated SNRs (one micrograph each without --detectors)")
flags.DEFINE_string("detectors", "", "comma-separated synthetic.DETECTORS presets: simulate counting-detector movies")
flags.DEFINE_integer("count", None, "micrographs to write (default: one per SNR)")
flags.DEFINE_integer("frames", 24, "movie frames (--detectors); the dose is 40 e/A^2 in all")
flags.DEFINE_string("defocus", "1.5", "defocus in micrometres, or a range lo,hi drawn uniformly")
flags.DEFINE_string("ice_nm", "0", "ice thickness in nm (--detectors), or a range lo,hi")
flags.DEFINE_string("noise_lag1", "0", "without --detectors: lag-1 autocorrelation(s) of the noise "
                    "(synthetic.correlated_noise), comma-separated, micrograph i gets value i (cycled)")
flags.DEFINE_integer("seed", 100, "seed of the first micrograph")
flags.DEFINE_integer("size", 1024, "micrograph side in pixels")
flags.DEFINE_integer("particles", 40, "particles per micrograph")
flags.DEFINE_string("out", "runs/cryo_train", "output folder")

TOTAL_DOSE = 40.0  # e/A^2 over the movie


def numbers(name, text, count=None):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or (count and len(values) not in count):
        raise ConfigError(f"--{name}={text!r} must be " + ("one number or a range lo,hi" if count else
                                                            "numbers separated by commas"))
    return values


def main(argv):
    from n2s_tf import synthetic

    snrs = numbers("snrs", FLAGS.snrs)
    lags = numbers("noise_lag1", FLAGS.noise_lag1)
    if not all(0 <= lag < 2**-0.5 for lag in lags):
        raise ConfigError(f"--noise_lag1={FLAGS.noise_lag1!r}: each value must lie in [0, 0.707)")
    defocus = numbers("defocus", FLAGS.defocus, (1, 2))
    ice = numbers("ice_nm", FLAGS.ice_nm, (1, 2))
    detectors = [d for d in FLAGS.detectors.split(",") if d]
    unknown = [d for d in detectors if d not in synthetic.DETECTORS]
    if unknown:
        raise ConfigError(f"--detectors: {unknown[0]!r}; choose from {', '.join(synthetic.DETECTORS)}")
    paths = [p for p in FLAGS.pdb.split(",") if p]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing or not paths:
        raise ConfigError(f"--pdb={missing[0] if missing else FLAGS.pdb}: no such file")
    models = {p: synthetic.read_atoms(p) for p in paths}
    count = FLAGS.count or len(snrs)
    folders = ["clean", "even", "odd"]
    for folder in folders:
        os.makedirs(os.path.join(FLAGS.out, folder), exist_ok=True)
    for i in range(count):
        seed = FLAGS.seed + i
        rng = np.random.default_rng(seed)
        snr = snrs[i % len(snrs)]
        path = paths[(i // max(len(detectors), 1)) % len(paths)]
        options = dict(n_particles=FLAGS.particles, snr=snr, seed=seed,
                       defocus_um=float(rng.uniform(defocus[0], defocus[-1])))
        if detectors:
            detector = detectors[i % len(detectors)]
            ice_nm = float(rng.uniform(ice[0], ice[-1]))
            mic = synthetic.simulate_movie(models[path], (FLAGS.size, FLAGS.size), n_frames=FLAGS.frames,
                                           dose_per_frame=TOTAL_DOSE / FLAGS.frames, ice_nm=ice_nm,
                                           **synthetic.DETECTORS[detector], **options)
            name = f"mic{i:03d}_{os.path.splitext(os.path.basename(path))[0]}_{detector}_snr{snr:g}"
        else:
            lag = lags[i % len(lags)]
            mic = synthetic.simulate_micrograph(models[path], (FLAGS.size, FLAGS.size), pair=True, noise_lag1=lag,
                                                **options)
            # Two noise draws of the same micrograph at the same SNR: a Noise2Noise pair.
            mic["even"], mic["odd"] = mic["noisy"], mic["noisy_b"]
            name = f"snr{snr:g}" if count == len(snrs) and len(paths) == 1 else f"mic{i:03d}_snr{snr:g}"
            name += f"_lag{lag:g}" if len(lags) > 1 else ""
        np.save(os.path.join(FLAGS.out, f"{name}.npy"), mic["noisy"])
        for folder in folders:
            np.save(os.path.join(FLAGS.out, folder, f"{name}.npy"), mic[folder])
        print(f"wrote {FLAGS.out}/{name}.npy (seed {seed}, defocus {options['defocus_um']:.2f} um)", flush=True)


if __name__ == "__main__":
    run_main(main)
