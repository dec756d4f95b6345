"""A data set of fei-sized micrographs through test_single.py: throughput, a kill -9 and resume,
a corrupt file, and two shards.

    python bench/dataset.py --copies=50 --out=runs/dataset        # about 15 min on 2 cores

Writes --copies MRC files to --out/in/: the real micrograph (--micrograph) rolled by a different
offset each (so that no two are the same), and in place of the middle one a truncated file.
Then, each test_single.py run in its own process with the default cryo model:
1. one at a time: --singles of the good files, one process each (what a shell loop does);
   seconds per file and micrographs per hour from the whole processes' wall time;
2. the folder in one run: wall time, micrographs per hour, peak resident memory, the exit
   code (1: one file failed) and the failure line; the ratio to 1 is the batch's gain;
3. the folder again, killed with SIGKILL once half of the outputs exist, then rerun with
   --skip_existing: the rerun must skip exactly the outputs that exist (their files untouched),
   denoise the rest, and leave every output complete and no part file behind;
4. --shard=0/2 and --shard=1/2 at once into two folders: every good input in exactly one.
Prints each figure and a final PASS / FAIL per check; exits 1 if a check fails.
"""

import glob
import os
import re
import resource
import signal
import subprocess
import sys
import time

import mrcfile
import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("micrograph", os.path.join(ROOT, "..", "shared", "data", "fei-extended.mrc"),
                    "the micrograph to copy")
flags.DEFINE_integer("copies", 50, "files in the data set, one of them corrupt")
flags.DEFINE_integer("singles", 5, "good files denoised one process each")
flags.DEFINE_string("out", "runs/dataset", "folder for inputs and outputs")
flags.DEFINE_string("steps", "singles,batch,resume,shards", "which of the four parts to run")

SUMMARY = re.compile(r"done (\d+), skipped (\d+), failed (\d+) of (\d+) in ([\d.]+) s")


def make_inputs(folder):
    """The data set; returns (good input paths, the corrupt one)."""
    os.makedirs(folder, exist_ok=True)
    with mrcfile.open(FLAGS.micrograph, permissive=True) as mrc:
        image = np.asarray(mrc.data, np.float32)
        voxel = mrc.voxel_size
    bad_index = FLAGS.copies // 2
    good, bad = [], None
    for i in range(FLAGS.copies):
        path = os.path.join(folder, f"mic{i:04d}.mrc")
        if i == bad_index:
            bad = path
        else:
            good.append(path)
        if os.path.exists(path):
            continue
        with mrcfile.new(path) as mrc:
            mrc.set_data(np.roll(image, (37 * i, 53 * i), axis=(0, 1)))
            mrc.voxel_size = voxel
        if i == bad_index:  # a transfer cut short: the header promises more data than the file holds
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 3)
    return good, bad


def start(arguments):
    command = [sys.executable, os.path.join(ROOT, "test_single.py"), *arguments]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), time.monotonic()


def finish(process, began):
    """(return code, stdout, stderr, wall seconds, peak resident GB) of a started process."""
    stdout, stderr = process.communicate()
    seconds = time.monotonic() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # the largest child so far
    return process.returncode, stdout, stderr, seconds, peak


def run(arguments):
    return finish(*start(arguments))


def outputs(folder):
    return sorted(glob.glob(os.path.join(folder, "*.mrc")))


def complete(path, shape):
    try:
        with mrcfile.open(path) as mrc:
            return mrc.data.shape == shape and bool(np.isfinite(mrc.data).all())
    except (OSError, ValueError):
        return False


def main(argv):
    inputs = os.path.join(FLAGS.out, "in")
    good, bad = make_inputs(inputs)
    with mrcfile.mmap(good[0]) as mrc:
        shape = mrc.data.shape
    steps = FLAGS.steps.split(",")
    checks = {}
    per_hour = {}
    print(f"{len(good)} good micrographs of {shape[1]} x {shape[0]} and one corrupt ({os.path.basename(bad)})")

    if "singles" in steps:
        times = []
        for path in good[:FLAGS.singles]:
            out = os.path.join(FLAGS.out, "singles", os.path.basename(path))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            code, _, stderr, seconds, peak = run([f"--input={path}", f"--output={out}", "--overwrite"])
            if code:
                sys.exit(f"one-at-a-time run failed:\n{stderr[-2000:]}")
            times.append(seconds)
        per_hour["singles"] = 3600 / np.mean(times)
        print(f"1. one process per file: {np.mean(times):.2f} s/file (min {min(times):.2f}, max {max(times):.2f}), "
              f"{per_hour['singles']:.0f} micrographs/hour", flush=True)

    if "batch" in steps:
        out = os.path.join(FLAGS.out, "batch")
        code, _, stderr, seconds, peak = run([f"--input={inputs}", f"--output={out}/", "--overwrite"])
        written = [p for p in outputs(out) if complete(p, shape)]
        failures = [line for line in stderr.splitlines() if " failed: " in line]
        per_hour["batch"] = 3600 * len(written) / seconds
        print(f"2. one run over the folder: {seconds:.1f} s for {len(written)} outputs, "
              f"{seconds / len(written):.2f} s/file, {per_hour['batch']:.0f} micrographs/hour, "
              f"peak {peak:.2f} GB, exit code {code}", flush=True)
        for line in failures:
            print(f"   {line}")
        checks["corrupt file reported, the others written, exit 1"] = (
            code == 1 and len(written) == len(good) and len(failures) == 1 and os.path.basename(bad) in failures[0])
        if "singles" in per_hour:
            gain = per_hour["batch"] / per_hour["singles"]
            print(f"   throughput against one process per file: {gain:.2f}x")
            checks["batch throughput >= 1.2x one at a time"] = gain >= 1.2

    if "resume" in steps:
        out = os.path.join(FLAGS.out, "resume")
        for path in outputs(out):
            os.remove(path)
        process, began = start([f"--input={inputs}", f"--output={out}/"])
        while len(outputs(out)) < len(good) // 2 and process.poll() is None:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        before = {p: os.stat(p).st_mtime_ns for p in outputs(out)}
        parts = glob.glob(os.path.join(out, ".*.part*"))
        print(f"3. killed with SIGKILL after {time.monotonic() - began:.1f} s: {len(before)} outputs, "
              f"{len(parts)} part file(s) left by the kill", flush=True)
        code, _, stderr, seconds, _ = run([f"--input={inputs}", f"--output={out}/", "--skip_existing"])
        match = SUMMARY.search(stderr)
        done, skipped, failed = (int(match[k]) for k in (1, 2, 3)) if match else (-1, -1, -1)
        untouched = all(os.stat(p).st_mtime_ns == mtime for p, mtime in before.items())
        whole = [p for p in outputs(out) if complete(p, shape)]
        leftover = glob.glob(os.path.join(out, ".*.part*"))
        print(f"   rerun with --skip_existing: done {done}, skipped {skipped}, failed {failed} in {seconds:.1f} s; "
              f"{len(whole)} complete outputs, earlier outputs untouched: {untouched}, part files left: "
              f"{len(leftover)}", flush=True)
        checks["resume: every output complete, none computed twice"] = (
            skipped == len(before) and done == len(good) - len(before) and failed == 1 and untouched
            and len(whole) == len(good) and not leftover)

    if "shards" in steps:
        folders = [os.path.join(FLAGS.out, f"shard{i}") for i in range(2)]
        started = [start([f"--input={inputs}", f"--output={folder}/", "--overwrite", f"--shard={i}/2"])
                   for i, folder in enumerate(folders)]
        results = [finish(*s) for s in started]
        names = [{os.path.basename(p) for p in outputs(folder)} for folder in folders]
        expected = {os.path.basename(p) for p in good}
        print(f"4. two shards at once: {len(names[0])} + {len(names[1])} outputs, in both: "
              f"{len(names[0] & names[1])}, missing: {len(expected - names[0] - names[1])}, wall "
              f"{max(r[3] for r in results):.1f} s", flush=True)
        checks["two shards cover every input exactly once"] = (
            not names[0] & names[1] and names[0] | names[1] == expected)

    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
