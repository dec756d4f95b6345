"""Time of the shipped general model on one 512 x 512 photograph, with and without the
collaborative filtering after it (test_single.py --collaborative).

    python bench/general_speed.py            # about a minute on a 2-core CPU

1. In one process, after a warm-up: the median over --repeats of `n2s_tf.denoise` on the
   shipped example (n2s_tf/examples/noisy_camera.png, sigma 25), wall and CPU seconds, with
   collaborative=False and True.
2. The whole `test_single.py` run a new user starts (start-up, model load, read, denoise,
   write), wall and CPU seconds of the child process, without and with --collaborative.
"""

import functools
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import run_main  # noqa: E402

EXAMPLE = os.path.join(ROOT, "n2s_tf", "examples", "noisy_camera.png")
flags.DEFINE_integer("repeats", 5, "timed calls of n2s_tf.denoise per setting")
FLAGS = flags.FLAGS


def timed(function):
    """(wall s, CPU s of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def child_seconds(args):
    """(wall s, CPU s) of one child process running `args`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main(argv):
    import n2s_tf
    from n2s_tf import io

    image = io.read_image(EXAMPLE).data[..., 0]
    model = n2s_tf.load_model()
    print(f"{EXAMPLE}: {image.shape[0]} x {image.shape[1]}; {os.cpu_count()} CPUs")
    for name, collaborative in (("network only", False), ("and collaborative filtering", True)):
        n2s_tf.denoise(image, model, collaborative=collaborative)  # warm-up
        call = functools.partial(n2s_tf.denoise, image, model, collaborative=collaborative)
        runs = np.array([timed(call) for _ in range(FLAGS.repeats)])
        wall, cpu = np.median(runs, axis=0)
        print(f"n2s_tf.denoise, {name}: {wall:.2f} s wall, {cpu:.2f} s CPU (median of {FLAGS.repeats})")
    with tempfile.TemporaryDirectory() as work:
        for name, extra in (("(defaults)", []), ("--collaborative", ["--collaborative"])):
            args = [sys.executable, "test_single.py", f"--input={EXAMPLE}",
                    f"--output={os.path.join(work, 'out.tif')}", "--overwrite"] + extra
            wall, cpu = child_seconds(args)
            print(f"test_single.py {name}: {wall:.1f} s wall, {cpu:.1f} s CPU (whole process)")


if __name__ == "__main__":
    run_main(main)
