"""CAREamics Noise2Void as a benchmark peer: train one model on all inputs, then denoise each.

Runs in the peers venv (bench/peers.py), never in n2s_tf's:

    python careamics_n2v.py --inputs=a.npy,b.npy --outputs=a_out.npy,b_out.npy --result=r.json \
        [--steps=2000 --batch_size=16 --patch_size=64 --seed=0] [--model=n2v.ckpt | --save_model=n2v.ckpt] \
        [--tile=256 --tile_overlap=48 --predict_batch_size=1] [--work_dir=DIR] \
        [--struct_axes=square --struct_span=3]

Inputs are 2D float32 arrays in any units; outputs are float32 in the same units. Everything
about Noise2Void is CAREamics' default (UNet, masking, Adam and its learning rate, mean/std
normalization, flips and rotations, 8 validation patches); training stops after exactly --steps
optimizer steps. --struct_axes (horizontal, vertical, cross, square) trains structN2V: CAREamics
also masks the masked pixel's neighbours within --struct_span along those axes, the pixels whose
noise is correlated with its own. With --model the training is skipped and that checkpoint predicts.
Lightning's logs go to --work_dir (a temporary folder by default); periodic checkpoints are off
(they would only add disk writes to the timing) and the final model is saved once.
"""

import argparse
import importlib.machinery
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
import types

import lightning.pytorch  # noqa: F401  (before the stand-in below: see there)
import numpy as np
import torch


def stand_in_for_torchvision():
    """An empty torchvision, when none is installed: careamics imports it for its LVAE models only,
    and PyPI's torchvision for a CPU torch 2.13 cannot load (see bench/peers.py). Lightning and
    torchmetrics probe for torchvision when first imported and cache the answer, hence their import
    above: they must find none."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        module = sys.modules[name] = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules["torchvision"].__version__ = "none"
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]


stand_in_for_torchvision()
import careamics  # noqa: E402
from careamics import CAREamist  # noqa: E402
from careamics.config import create_advanced_n2v_config  # noqa: E402


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train(images, args, work_dir):
    """A CAREamist trained for exactly args.steps optimizer steps; the number of steps done."""
    config = create_advanced_n2v_config(
        experiment_name="n2v", data_type="array", axes="YX", patch_size=[args.patch_size] * 2,
        batch_size=args.batch_size, seed=args.seed + 1,  # CAREamics wants seeds > 0
        struct_n2v_axes=args.struct_axes, struct_n2v_span=args.struct_span,
        num_epochs=-1,  # no epoch limit: max_steps ends the training
        trainer_params={"max_steps": args.steps},
        checkpoint_params={"every_n_epochs": 0, "save_last": False, "save_top_k": 0})
    careamist = CAREamist(config, work_dir=work_dir, enable_progress_bar=False)
    careamist.train(train_data=images)
    return careamist, careamist.trainer.global_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", required=True, help="comma-separated .npy files (2D float32)")
    parser.add_argument("--outputs", required=True, help="comma-separated .npy files, one per input")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--patch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a saved CAREamics checkpoint to predict with instead of training")
    parser.add_argument("--save_model", help="where to save the trained checkpoint")
    parser.add_argument("--tile", type=int, help="prediction tile side (default: whole images)")
    parser.add_argument("--tile_overlap", type=int, default=48, help="CAREamics' default: 48")
    parser.add_argument("--predict_batch_size", type=int, help="tiles per batch (default: the training batch size)")
    parser.add_argument("--work_dir", help="Lightning's logs (default: a temporary folder)")
    parser.add_argument("--struct_axes", default="none", choices=["none", "horizontal", "vertical", "cross", "square"],
                        help="structN2V mask axes (none: plain Noise2Void)")
    parser.add_argument("--struct_span", type=int, default=5, help="structN2V mask span (odd; CAREamics' default 5)")
    args = parser.parse_args()
    inputs, outputs = args.inputs.split(","), args.outputs.split(",")
    if len(inputs) != len(outputs):
        parser.error(f"{len(inputs)} inputs but {len(outputs)} outputs")

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
    images = [np.load(path).astype(np.float32) for path in inputs]
    result = dict(careamics=careamics.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="careamics_") as temp:
        work_dir = args.work_dir or temp
        start = time.perf_counter()
        if args.model:
            careamist, checkpoint = CAREamist(checkpoint_path=args.model, work_dir=work_dir,
                                              enable_progress_bar=False), args.model
            result.update(load_seconds=time.perf_counter() - start, steps_done=0)
        else:
            careamist, steps_done = train(images, args, work_dir)
            result.update(train_seconds=time.perf_counter() - start, steps_done=steps_done,
                          peak_rss_after_train_bytes=peak_rss_bytes())
            checkpoint = args.save_model or os.path.join(work_dir, "n2v.ckpt")
            careamist.trainer.save_checkpoint(checkpoint)
        # One image per call: CAREamics batches whole images only when they share a shape.
        tiling = dict(tile_size=(args.tile,) * 2, tile_overlap=(args.tile_overlap,) * 2) if args.tile else {}
        result["predict_seconds_each"] = []
        for image, path in zip(images, outputs):
            start = time.perf_counter()
            (prediction,), _ = careamist.predict(image, axes="YX", batch_size=args.predict_batch_size,
                                                 checkpoint=checkpoint, **tiling)
            result["predict_seconds_each"].append(time.perf_counter() - start)
            np.save(path, np.asarray(prediction, np.float32).reshape(image.shape))
    result.update(predict_seconds=sum(result["predict_seconds_each"]), peak_rss_bytes=peak_rss_bytes())
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    print(f"careamics_n2v: {json.dumps(result)}", file=sys.stderr)


if __name__ == "__main__":
    main()
