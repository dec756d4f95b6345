"""cryoCARE as a benchmark peer: train on an even/odd tomogram pair and denoise it, as its users do.

Runs in the cryoCARE venv (bench/peers.py: ensure_cryocare_venv), never in n2s_tf's, and drives
cryoCARE's own three programs with JSON configs, its recommended settings by default:

    python cryocare_n2n.py --even=e.npy --odd=o.npy --output=d.npy --result=r.json \
        [--patch=72 --depth=3 --first=16 --lr=0.0004 --epochs=100 --steps_per_epoch=200 --batch_size=16]

cryoCARE_extract_train_data.py samples --slices patches per tomogram (10 % along the tilt axis Y for
validation); cryoCARE_train.py trains its U-Net (Noise2Noise, MSE); cryoCARE_predict.py denoises
both halves and averages them. cryoCARE needs every axis longer than twice --patch.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import mrcfile
import numpy as np

BIN = os.path.dirname(sys.executable)


def write_mrc(path, volume, voxel):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(volume, np.float32))
        mrc.voxel_size = voxel


# cryoCARE wants a GPU id; on a CPU-only machine it warns that GPU 0 is absent and runs on the CPU.
CPU = 0


def run(program, config, folder):
    path = os.path.join(folder, f"{program}.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(BIN, f"{program}.py"), "--conf", path], check=True,
                   stdout=sys.stderr)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("even", "odd", "output", "result"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--voxel", type=float, default=1.0, help="voxel size in Angstrom (written to the MRCs)")
    parser.add_argument("--patch", type=int, default=72)
    parser.add_argument("--slices", type=int, default=1200, help="training patches per tomogram")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--first", type=int, default=16)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.0004)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--steps_per_epoch", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cryocare_") as work:
        even, odd = os.path.join(work, "even.mrc"), os.path.join(work, "odd.mrc")
        write_mrc(even, np.load(args.even), args.voxel)
        write_mrc(odd, np.load(args.odd), args.voxel)
        data = os.path.join(work, "train_data")
        extract = run("cryoCARE_extract_train_data", {
            "even": [even], "odd": [odd], "patch_shape": [args.patch] * 3, "num_slices": args.slices,
            "split": 0.9, "tilt_axis": "Y",
            # cryoCARE's 500, but it cannot draw more than its training patches.
            "n_normalization_samples": min(500, int(args.slices * 0.9)), "path": data}, work)
        train = run("cryoCARE_train", {
            "train_data": data, "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
            "batch_size": args.batch_size, "unet_kern_size": args.kernel, "unet_n_depth": args.depth,
            "unet_n_first": args.first, "learning_rate": args.lr, "model_name": "model", "path": work,
            "gpu_id": CPU}, work)
        out_dir = os.path.join(work, "denoised")
        predict = run("cryoCARE_predict", {
            "path": os.path.join(work, "model.tar.gz"), "even": even, "odd": odd, "n_tiles": [1, 1, 1],
            "output": out_dir, "overwrite": True, "gpu_id": CPU}, work)
        with mrcfile.open(os.path.join(out_dir, "even.mrc"), permissive=True) as mrc:
            np.save(args.output, np.asarray(mrc.data, np.float32))
    import csbdeep
    import tensorflow as tf

    result = dict(csbdeep=csbdeep.__version__, tensorflow=tf.__version__, settings=vars(args),
                  extract_seconds=extract, train_seconds=train, predict_seconds=predict,
                  peak_rss_bytes=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    print(f"cryocare_n2n: {json.dumps(result)}", file=sys.stderr)


if __name__ == "__main__":
    main()
