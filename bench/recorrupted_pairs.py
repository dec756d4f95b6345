"""Noise2Noise pairs from a real micrograph with white noise, for training beside simulated movies.

    python bench/recorrupted_pairs.py --input=../shared/data/fei-extended.mrc --out=runs/cryoem_n2n_data   # 10 s

The micrograph is cut into 2 x 2 quadrants; each gets --draws recorrupted pairs
(`noise.recorrupted_pair`, noise std from the outer Fourier rings of the whole micrograph,
`calibration.white_noise_power`), written as <name>_q<k>_d<j>.npy to --out/even and --out/odd.
Refused unless the micrograph's noise verdict is white: on correlated noise the two noises
would not be independent.
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
flags.DEFINE_string("input", None, "a micrograph with white noise (MRC, TIFF or NPY)")
flags.DEFINE_integer("draws", 2, "pairs per quadrant")
flags.DEFINE_integer("seed", 500, "seed of the recorruption noise")
flags.DEFINE_string("out", "runs/cryoem_n2n_data", "output folder (even/ and odd/ inside)")


def main(argv):
    from n2s_tf import calibration, io, noise

    if not FLAGS.input:
        raise ConfigError("--input: give a micrograph")
    image = io.read_image(FLAGS.input).data[..., 0].astype(np.float32)
    verdict = noise.noise_report(image)["verdict"]
    if verdict != "white":
        raise ConfigError(f"{FLAGS.input}: noise verdict {verdict}; recorrupted pairs need white noise")
    std = np.sqrt(calibration.white_noise_power(image - image.mean()))
    rng = np.random.default_rng(FLAGS.seed)
    h, w = image.shape[0] // 2, image.shape[1] // 2
    name = os.path.splitext(os.path.basename(FLAGS.input))[0].split("-")[0]
    for half in ("even", "odd"):
        os.makedirs(os.path.join(FLAGS.out, half), exist_ok=True)
    for q, (r, c) in enumerate([(0, 0), (0, w), (h, 0), (h, w)]):
        for d in range(FLAGS.draws):
            pair = noise.recorrupted_pair(image[r:r + h, c:c + w], std, rng)
            for half, array in zip(("even", "odd"), pair):
                np.save(os.path.join(FLAGS.out, half, f"{name}_q{q}_d{d}.npy"), array)
    print(f"wrote {4 * FLAGS.draws} pairs to {FLAGS.out}/even, odd (noise std {std:.4g})")


if __name__ == "__main__":
    run_main(main)
