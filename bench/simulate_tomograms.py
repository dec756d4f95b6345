"""Write simulated tomograms (even/odd halves, full dose, noiseless) for training or checks.

    python bench/simulate_tomograms.py --count=16 --seed=300 --out=runs/tomo_train   # about 8 min
    python bench/simulate_tomograms.py --count=2 --size=48,96,96 --out=runs/tomo_small  # seconds

Tomogram i uses seed --seed + i, a total dose drawn log-uniformly from --doses, a defocus from
--defocus and a particle count from --particles, with the atomic models of --models mixed
(n2s_tf.synthetic_tomogram: dose-symmetric tilt series +-60 degrees by 3, per-tilt CTF, Poisson
counting, weighted back-projection). bench/tomo.py scores seeds 0 and 100: seeds far from
those keep training and test apart. Writes <name>.npy (Z, Y, X float32) to --out/even,
--out/odd (the independent halves: Noise2Noise pairs), --out/full (all counts) and --out/clean
(the noiseless reconstruction with the same missing wedge).
"""

import os
import sys

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import parse_floats, parse_ints, run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

DATA = os.path.join(ROOT, "..", "shared", "data")
FOLDERS = {"even": "even", "odd": "odd", "full": "noisy", "clean": "clean"}  # folder -> simulate_tomogram key

FLAGS = flags.FLAGS
flags.DEFINE_string("models", f"{DATA}/6z6u.pdb,{DATA}/3jb9.cif,{DATA}/6qt9.cif",
                    "comma-separated atomic models (PDB/mmCIF), mixed in every tomogram")
flags.DEFINE_integer("count", 16, "tomograms to write")
flags.DEFINE_string("size", "128,192,192", "tomogram size Z,Y,X in voxels")
flags.DEFINE_float("pixel_size", 8.0, "Angstrom per voxel")
flags.DEFINE_string("doses", "40,300", "total dose in e/A^2, or a range lo,hi drawn log-uniformly")
flags.DEFINE_string("defocus", "2,5", "defocus in micrometres, or a range lo,hi drawn uniformly")
flags.DEFINE_string("particles", "20,50", "particles per tomogram, or a range lo,hi")
flags.DEFINE_float("contrast", 0.1, "weak-phase contrast of the projections (see simulate_tomogram)")
flags.DEFINE_integer("seed", 300, "seed of the first tomogram")
flags.DEFINE_string("out", "runs/tomo_train", "output folder")


def value_range(name, text):
    """(lo, hi) of a flag that is one positive number or a range lo,hi."""
    values = parse_floats(text, name)
    if len(values) not in (1, 2):
        raise ConfigError(f"--{name}={text!r} must be one positive number or a range lo,hi")
    return values[0], values[-1]


def draw(rng, lo_hi, log=False):
    """One value drawn uniformly (log-uniformly with log) from lo_hi."""
    lo, hi = lo_hi
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if log else float(rng.uniform(lo, hi))


def main(argv):
    from n2s_tf import synthetic, synthetic_tomogram

    shape = parse_ints(FLAGS.size, "size")
    doses, defocus, particles = (value_range(name, getattr(FLAGS, name)) for name in ("doses", "defocus", "particles"))
    paths = [p for p in FLAGS.models.split(",") if p]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing or not paths:
        raise ConfigError(f"--models: no such file {missing[0] if missing else '(none given)'}")
    kinds = [synthetic.read_atoms(p) for p in paths]
    for folder in FOLDERS:
        os.makedirs(os.path.join(FLAGS.out, folder), exist_ok=True)
    for i in range(FLAGS.count):
        seed = FLAGS.seed + i
        rng = np.random.default_rng(seed)
        dose, defocus_um = draw(rng, doses, log=True), draw(rng, defocus)
        count = int(round(draw(rng, particles)))
        tomogram = synthetic_tomogram.simulate_tomogram(
            kinds[i % len(kinds):] + kinds[:i % len(kinds)], shape=shape, pixel_size=FLAGS.pixel_size,
            n_particles=count, total_dose=dose, defocus_um=defocus_um, contrast=FLAGS.contrast, seed=seed)
        name = f"tomo{i:03d}_dose{dose:.0f}"
        for folder, key in FOLDERS.items():
            np.save(os.path.join(FLAGS.out, folder, f"{name}.npy"), tomogram[key])
        print(f"wrote {name} (seed {seed}, dose {dose:.0f} e/A^2, defocus {defocus_um:.2f} um, "
              f"{count} particles)", flush=True)


if __name__ == "__main__":
    run_main(main)
