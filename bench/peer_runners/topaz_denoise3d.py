"""Topaz-Denoise's pretrained 3D model as a benchmark peer: denoise each volume as `topaz denoise3d` does.

Runs in the peers venv (bench/peers.py), never in n2s_tf's:

    python topaz_denoise3d.py --inputs=a.npy --outputs=a_out.npy --result=r.json [--model=unet-3d]

Inputs are (Z, Y, X) float32 tomograms in any units; outputs are float32 in the same units. The model
and the tiling default to those of `topaz denoise3d` (pretrained "unet-3d", 96^3 patches with 48 voxels
of padding); the volume is standardized by its own mean and std as topaz does.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import topaz
import torch
from topaz.commands.denoise3d import add_arguments
from topaz.denoise import Denoise3D

CLI = add_arguments().parse_args([])  # `topaz denoise3d` with no options: its defaults


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", required=True, help="comma-separated .npy files (3D float32)")
    parser.add_argument("--outputs", required=True, help="comma-separated .npy files, one per input")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--model", default=CLI.model, help="pretrained model name or path")
    parser.add_argument("--patch_size", type=int, default=CLI.patch_size)
    parser.add_argument("--padding", type=int, default=CLI.patch_padding)
    args = parser.parse_args()
    inputs, outputs = args.inputs.split(","), args.outputs.split(",")
    if len(inputs) != len(outputs):
        parser.error(f"{len(inputs)} inputs but {len(outputs)} outputs")

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
    start = time.perf_counter()
    model = Denoise3D(args.model, use_cuda=False, dims=3)
    result = dict(topaz=topaz.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads(),
                  model=args.model, patch_size=args.patch_size, padding=args.padding,
                  load_seconds=time.perf_counter() - start, predict_seconds_each=[])
    for source, destination in zip(inputs, outputs):
        volume = np.load(source).astype(np.float32)
        start = time.perf_counter()
        denoised = model.denoise(volume, patch_size=args.patch_size, padding=args.padding, verbose=False)
        result["predict_seconds_each"].append(time.perf_counter() - start)
        np.save(destination, np.asarray(denoised, np.float32))
    result["predict_seconds"] = sum(result["predict_seconds_each"])
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    print(f"topaz_denoise3d: {json.dumps(result)}", file=sys.stderr)


if __name__ == "__main__":
    main()
