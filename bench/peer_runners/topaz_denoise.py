"""Topaz-Denoise's pretrained model as a benchmark peer: denoise each input as `topaz denoise` does.

Runs in the peers venv (bench/peers.py), never in n2s_tf's:

    python topaz_denoise.py --inputs=a.npy,b.npy --outputs=a_out.npy,b_out.npy --result=r.json \
        [--model=unet --patch_size=1024 --padding=500]

Inputs are 2D float32 micrographs in any units; outputs are float32 in the same units. The model
and every other setting default to those of `topaz denoise -d -1` (CPU): "unet" is the pretrained
unet_L2_v0.2.2.sav shipped in topaz/pretrained/denoise; each micrograph is standardized, denoised
in 1024 px patches with 500 px of context, each patch standardized again, and restored to its units.
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
from topaz.commands.denoise import add_arguments
from topaz.denoise import Denoise, denoise_image

CLI = add_arguments().parse_args([])  # `topaz denoise` with no options: its defaults


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", required=True, help="comma-separated .npy files (2D float32)")
    parser.add_argument("--outputs", required=True, help="comma-separated .npy files, one per input")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--model", default=CLI.model[0], help="pretrained model name or path")
    parser.add_argument("--patch_size", type=int, default=CLI.patch_size)
    parser.add_argument("--padding", type=int, default=CLI.patch_padding)
    args = parser.parse_args()
    inputs, outputs = args.inputs.split(","), args.outputs.split(",")
    if len(inputs) != len(outputs):
        parser.error(f"{len(inputs)} inputs but {len(outputs)} outputs")

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
    start = time.perf_counter()
    model = Denoise(args.model, use_cuda=False)
    result = dict(topaz=topaz.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads(),
                  model=args.model, patch_size=args.patch_size, padding=args.padding,
                  load_seconds=time.perf_counter() - start, predict_seconds_each=[])
    for source, destination in zip(inputs, outputs):
        micrograph = np.load(source).astype(np.float32)
        start = time.perf_counter()
        # The options `topaz denoise` passes by default: no lowpass, Gaussian or deconvolution filter.
        denoised = denoise_image(micrograph, [model], lowpass=CLI.lowpass, cutoff=CLI.pixel_cutoff,
                                 deconvolve=CLI.deconvolve, deconv_patch=CLI.deconv_patch,
                                 patch_size=args.patch_size, padding=args.padding, normalize=CLI.normalize)
        result["predict_seconds_each"].append(time.perf_counter() - start)
        np.save(destination, np.asarray(denoised, np.float32))
    result["predict_seconds"] = sum(result["predict_seconds_each"])
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    print(f"topaz_denoise: {json.dumps(result)}", file=sys.stderr)


if __name__ == "__main__":
    main()
