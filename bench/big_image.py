"""Peak memory and wall time of test_single.py on one very large image.

    nice python bench/big_image.py                        # 16000 x 16000 float32 NPY, tiny model
    python bench/big_image.py --size=8000 --format=mrc    # smaller, as MRC
    python bench/big_image.py --tree=/tmp/old_checkout    # the same run on another checkout
    python bench/big_image.py --shape=300,1024,1024 --format=mrc --halves   # a tomogram's two halves

Makes a synthetic float32 image (noise on a smooth ramp) in --out, written in slabs so this
process stays small (with --halves two of them, even/ and odd/, denoised with --input_b and
calibrated against each other), then runs the whole `test_single.py` process of --tree on it (start-up,
model load, read, denoise, write) and prints its peak resident memory (the child's own
ru_maxrss) against the image's float32 size, its wall time and its CPU time (user + system,
less sensitive than wall time to other work on the machine). The model is --model, or by
default a tiny exported U-Net (depth 1, 2 filters) built once in --out, so the figure measures
the pipeline around the network, not the network. Costs about 2 GB of disk per size and
format, a few minutes on two cores at 16000 px.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import parse_ints, run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

flags.DEFINE_integer("size", 16000, "side of the square float32 image, in pixels")
flags.DEFINE_string("shape", None, "the image's shape instead, e.g. 300,1024,1024 (Z,Y,X) for a tomogram")
flags.DEFINE_boolean("halves", False, "two halves (even/, odd/) denoised together with --input_b")
flags.DEFINE_enum("format", "npy", ["npy", "mrc"], "input and output file format")
flags.DEFINE_string("model", None, "exported model for test_single.py (default: a tiny U-Net built in --out)")
flags.DEFINE_string("tree", ROOT, "checkout whose test_single.py runs")
flags.DEFINE_string("extra", "", "more test_single.py flags, space separated (e.g. --max_memory=1)")
flags.DEFINE_string("out", os.path.join(ROOT, "runs", "big_image"), "folder for the image, model and output")
FLAGS = flags.FLAGS

# Built in a child process: the parent must stay small, since a child's ru_maxrss starts
# from the parent's resident size at fork time on Linux.
TINY_MODEL = """
import sys
from n2s_tf.export import export_model
from n2s_tf.networks import build_network
ndim = int(sys.argv[2])
network = build_network("unet", ndim=ndim, channels=1, depth=1, base_filters=2)
meta = {"ndim": ndim, "channels": 1, "stride": network.stride, "receptive_field": network.receptive_field,
        "method": "n2s", "network": "unet", "steps": 0}
print(export_model(network, meta, sys.argv[1]))
"""


def make_image(path, shape, kind, seed=0):
    """A float32 image of `shape` on disk, filled slab by slab (never whole in memory)."""
    rng = np.random.default_rng(seed)
    if kind == "npy":
        import numpy.lib.format

        data = numpy.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32, shape=shape)
    else:
        import mrcfile

        mrc = mrcfile.new_mmap(path + ".part", shape=shape, mrc_mode=2, overwrite=True)
        data = mrc.data
    columns = np.linspace(0.0, 50.0, shape[-1], dtype=np.float32)
    rows_per_slab = max(1, 2**24 // int(np.prod(shape[1:])))
    for start in range(0, shape[0], rows_per_slab):
        rows = slice(start, min(start + rows_per_slab, shape[0]))
        n = rows.stop - rows.start
        data[rows] = 100.0 + columns + rng.normal(0.0, 10.0, (n, *shape[1:])).astype(np.float32)
    data.flush()
    del data
    if kind == "mrc":
        mrc.update_header_stats()
        mrc.close()
    os.replace(path + ".part", path)


def rss_sampler(pid, samples, stop):
    """Record (seconds, resident bytes) of `pid` every 0.2 s, to say when the peak happened."""
    start = time.perf_counter()
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            break
        samples.append((time.perf_counter() - start, kib * 1024))
        stop.wait(0.2)


def main(argv):
    shape = parse_ints(FLAGS.shape, "shape") if FLAGS.shape else (FLAGS.size, FLAGS.size)
    name = "x".join(map(str, shape))
    halves = ("even", "odd") if FLAGS.halves else ("",)
    images = [os.path.join(FLAGS.out, half, f"noisy_{name}.{FLAGS.format}") for half in halves]
    for seed, image in enumerate(images):
        if not os.path.exists(image):
            print(f"making {image}", file=sys.stderr)
            os.makedirs(os.path.dirname(image), exist_ok=True)
            make_image(image, shape, FLAGS.format, seed)
    model = FLAGS.model
    if model is None:
        model = os.path.join(FLAGS.out, f"tiny{len(shape)}d", "denoiser")
        if not os.path.isdir(model):
            subprocess.run([sys.executable, "-c", TINY_MODEL, os.path.dirname(model), str(len(shape))],
                           check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    script = os.path.join(FLAGS.tree, "test_single.py")
    if not os.path.isfile(script):
        raise ConfigError(f"--tree={FLAGS.tree}: no test_single.py there")
    output = os.path.join(FLAGS.out, f"denoised_{name}.{FLAGS.format}")
    command = [sys.executable, script, f"--input={images[0]}", f"--output={output}", f"--model={model}",
               "--overwrite", *FLAGS.extra.split()] + [f"--input_b={os.path.dirname(image)}" for image in images[1:]]
    log = os.path.join(FLAGS.out, "test_single.log")
    samples, stop = [], threading.Event()
    start = time.perf_counter()
    with open(log, "w") as f:
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=FLAGS.tree,
                                   env=dict(os.environ, PYTHONPATH=FLAGS.tree))
        sampler = threading.Thread(target=rss_sampler, args=(process.pid, samples, stop), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise ConfigError(f"test_single.py failed, see {log}")
    peak = usage.ru_maxrss * 1024
    image_bytes = int(np.prod(shape)) * 4
    when = max(samples, key=lambda s: s[1])[0] if samples else float("nan")
    print(f"tree {FLAGS.tree}, {' x '.join(map(str, shape))} float32 {FLAGS.format.upper()} "
          f"({image_bytes / 1e9:.2f} GB{', two halves' if FLAGS.halves else ''}), model {model}")
    print(f"peak RSS {peak / 1e9:.2f} GB = {peak / image_bytes:.2f} x the image, at {when:.0f} s; "
          f"wall {seconds:.0f} s, CPU {usage.ru_utime + usage.ru_stime:.0f} s")


if __name__ == "__main__":
    run_main(main)
