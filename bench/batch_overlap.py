"""Batch throughput of test_single.py with and without overlapping reading, computing and writing.

    nice -n 10 python bench/batch_overlap.py --copies=10 --size=2048 --out=runs/batch_overlap

Writes --copies MRC crops (--size square, from the middle of --micrograph) to --out/in/, then
denoises the folder with the default cryo model in alternating runs (--order), one after the
other: --nooverlap (read, compute, write one file at a time) and --overlap (the next file read
and the last one written in threads while a file computes). Prints each run's batch time (from
its summary line: model loading and TensorFlow start-up excluded), seconds per file and the
ratio of the means. Costs four times copies x the time of one crop.
"""

import os
import re
import subprocess
import sys

import mrcfile
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("micrograph", os.path.join(ROOT, "..", "..", "shared", "data", "fei-extended.mrc"),
                    "the micrograph to crop")
flags.DEFINE_integer("copies", 10, "files in the batch")
flags.DEFINE_integer("size", 2048, "crop side in pixels")
flags.DEFINE_string("out", "runs/batch_overlap", "folder for inputs and outputs")
flags.DEFINE_string("order", "nooverlap,overlap,overlap,nooverlap", "runs in this order")


def main(argv):
    inputs = os.path.join(FLAGS.out, "in")
    os.makedirs(inputs, exist_ok=True)
    with mrcfile.mmap(FLAGS.micrograph, permissive=True) as mrc:
        h, w = mrc.data.shape[-2:]
        y, x = (h - FLAGS.size) // 2, (w - FLAGS.size) // 2
        crop = mrc.data[..., y:y + FLAGS.size, x:x + FLAGS.size].astype("float32")
        voxel = mrc.voxel_size
    for i in range(FLAGS.copies):
        path = os.path.join(inputs, f"crop{i:03d}.mrc")
        if not os.path.exists(path):
            with mrcfile.new(path) as mrc:
                mrc.set_data(crop)
                mrc.voxel_size = voxel
    results = {}
    for k, mode in enumerate(FLAGS.order.split(",")):
        out = os.path.join(FLAGS.out, f"out_{k}_{mode}")
        command = [sys.executable, os.path.join(ROOT, "test_single.py"), f"--input={inputs}", f"--output={out}/",
                   f"--{mode}", "--overwrite"]
        result = subprocess.run(command, capture_output=True, text=True)
        match = re.search(r"done (\d+), skipped \d+, failed (\d+) of \d+ in ([\d.]+) s", result.stderr)
        if result.returncode or not match:
            sys.exit(f"{mode} run failed:\n{result.stderr[-3000:]}")
        seconds = float(match[3])
        results.setdefault(mode, []).append(seconds)
        print(f"{mode:10s} {FLAGS.copies} files of {FLAGS.size}x{FLAGS.size}: {seconds:.1f} s batch time, "
              f"{seconds / FLAGS.copies:.2f} s/file", flush=True)
    if "overlap" in results and "nooverlap" in results:
        # On a shared machine the load drifts: alternate the runs (nooverlap,overlap,overlap,nooverlap)
        # and compare the means.
        mean = {mode: sum(times) / len(times) for mode, times in results.items()}
        print(f"throughput ratio overlap / one at a time: {mean['nooverlap'] / mean['overlap']:.2f}x "
              f"(mean of {len(results['overlap'])} and {len(results['nooverlap'])} run(s))")


if __name__ == "__main__":
    app.run(main)
