"""Write simulated micrographs (noisy, and their clean images) for training or checks.

    python bench/simulate_micrographs.py --snrs=0.03,0.05,0.1,0.2,0.4 --seed=100 --out=runs/cryo_train

One 1024x1024 micrograph per SNR of randomly oriented copies of the PDB model (CTF at
1.5 um defocus, 1.5 A/px, white noise), as in bench/cryo.py; micrograph i uses seed
--seed + i, so seeds far from bench/cryo.py's (0, 1, 2) keep training and test apart.
Writes snr<snr>.npy (noisy) to --out and the clean images to --out/clean/.
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
flags.DEFINE_string("pdb", os.path.join(ROOT, "..", "shared", "data", "6z6u.pdb"), "atomic model (PDB or mmCIF)")
flags.DEFINE_string("snrs", "0.03,0.05,0.1,0.2,0.4", "comma-separated SNRs, one micrograph each")
flags.DEFINE_integer("seed", 100, "seed of the first micrograph")
flags.DEFINE_integer("size", 1024, "micrograph side in pixels")
flags.DEFINE_integer("particles", 40, "particles per micrograph")
flags.DEFINE_string("out", "runs/cryo_train", "output folder")


def main(argv):
    from n2s_tf import synthetic

    try:
        snrs = [float(v) for v in FLAGS.snrs.split(",")]
    except ValueError:
        raise ConfigError(f"--snrs={FLAGS.snrs!r} must be numbers separated by commas") from None
    if not os.path.isfile(FLAGS.pdb):
        raise ConfigError(f"--pdb={FLAGS.pdb}: no such file")
    atoms = synthetic.read_atoms(FLAGS.pdb)
    os.makedirs(os.path.join(FLAGS.out, "clean"), exist_ok=True)
    for i, snr in enumerate(snrs):
        mic = synthetic.simulate_micrograph(atoms, (FLAGS.size, FLAGS.size), n_particles=FLAGS.particles,
                                            snr=snr, seed=FLAGS.seed + i)
        np.save(os.path.join(FLAGS.out, f"snr{snr:g}.npy"), mic["noisy"])
        np.save(os.path.join(FLAGS.out, "clean", f"snr{snr:g}.npy"), mic["clean"])
        print(f"wrote {FLAGS.out}/snr{snr:g}.npy (seed {FLAGS.seed + i})")


if __name__ == "__main__":
    run_main(main)
