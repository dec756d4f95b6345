"""Topaz-Denoise's pretrained models as a benchmark peer: denoise each input as `topaz denoise`
(micrographs) or `topaz denoise3d` (tomograms, --dims=3) does.

Runs in the peers venv (bench/peers.py), never in n2s_tf's:

    python topaz_denoise.py --inputs=a.npy,b.npy --outputs=a_out.npy,b_out.npy --result=r.json \
        [--dims=2 --model=unet --patch_size=1024 --padding=500]

Inputs are float32 micrographs (2D) or (Z, Y, X) tomograms (3D) in any units; outputs are float32 in
the same units. The model and every other setting default to those of `topaz denoise -d -1` (CPU):
"unet" is the pretrained unet_L2_v0.2.2.sav shipped in topaz/pretrained/denoise; each micrograph is
standardized, denoised in 1024 px patches with 500 px of context, each patch standardized again, and
restored to its units. With --dims=3 they are those of `topaz denoise3d`: the pretrained "unet-3d",
96^3 patches with 48 voxels of padding, the volume standardized by its own mean and std.
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
from topaz.commands import denoise as denoise2d
from topaz.commands import denoise3d
from topaz.denoise import Denoise, Denoise3D, denoise_image

# `topaz denoise` and `topaz denoise3d` with no options: their defaults.
CLI = {2: denoise2d.add_arguments().parse_args([]), 3: denoise3d.add_arguments().parse_args([])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", required=True, help="comma-separated .npy files (2D float32)")
    parser.add_argument("--outputs", required=True, help="comma-separated .npy files, one per input")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2, help="micrographs (2) or tomograms (3)")
    parser.add_argument("--model", help="pretrained model name or path (default: topaz's for --dims)")
    parser.add_argument("--patch_size", type=int, help="default: topaz's for --dims")
    parser.add_argument("--padding", type=int, help="default: topaz's for --dims")
    args = parser.parse_args()
    cli = CLI[args.dims]
    default_model = cli.model[0] if isinstance(cli.model, list) else cli.model
    args.model = args.model or default_model
    args.patch_size = args.patch_size if args.patch_size is not None else cli.patch_size
    args.padding = args.padding if args.padding is not None else cli.patch_padding
    inputs, outputs = args.inputs.split(","), args.outputs.split(",")
    if len(inputs) != len(outputs):
        parser.error(f"{len(inputs)} inputs but {len(outputs)} outputs")

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
    start = time.perf_counter()
    model = Denoise3D(args.model, use_cuda=False, dims=3) if args.dims == 3 else Denoise(args.model, use_cuda=False)
    result = dict(topaz=topaz.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads(),
                  dims=args.dims, model=args.model, patch_size=args.patch_size, padding=args.padding,
                  load_seconds=time.perf_counter() - start, predict_seconds_each=[])
    for source, destination in zip(inputs, outputs):
        image = np.load(source).astype(np.float32)
        start = time.perf_counter()
        if args.dims == 3:
            denoised = model.denoise(image, patch_size=args.patch_size, padding=args.padding, verbose=False)
        else:
            # The options `topaz denoise` passes by default: no lowpass, Gaussian or deconvolution filter.
            denoised = denoise_image(image, [model], lowpass=cli.lowpass, cutoff=cli.pixel_cutoff,
                                     deconvolve=cli.deconvolve, deconv_patch=cli.deconv_patch,
                                     patch_size=args.patch_size, padding=args.padding, normalize=cli.normalize)
        result["predict_seconds_each"].append(time.perf_counter() - start)
        np.save(destination, np.asarray(denoised, np.float32))
    result["predict_seconds"] = sum(result["predict_seconds_each"])
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    print(f"topaz_denoise: {json.dumps(result)}", file=sys.stderr)


if __name__ == "__main__":
    main()
