"""N2S, N2SP and N2V (and more) side by side at the same budget on the demo set.

    python bench/methods.py --steps=2000 --methods=n2s,n2sp,n2v

Trains each method on the demo training images (skipping a method whose run directory
already holds an export, so a run made with train.py and the same --model_dir counts),
then prints PSNR / SSIM on the held-out images and the training speed.
"""

import json
import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from n2s_tf.cli.common import run_main  # noqa: E402

flags.DEFINE_integer("steps", 2000, "training steps per method")
flags.DEFINE_string("methods", "n2s,n2sp,n2v", "comma-separated methods")
flags.DEFINE_string("network", "unet", "network for every method")
flags.DEFINE_string("root", "runs/methods", "one run directory per method below this")
flags.DEFINE_integer("batch_size", 16, "batch size")
FLAGS = flags.FLAGS


def main(argv):
    import numpy as np

    from n2s_tf import api, data, metrics
    from n2s_tf.export import resolve_export

    heldout = data.demo_images("heldout")
    rows = []
    for method in FLAGS.methods.split(","):
        model_dir = os.path.join(FLAGS.root, method)
        try:
            export = resolve_export(model_dir)
            seconds = None
        except FileNotFoundError:
            start = time.time()
            export = api.train(model=method, steps=FLAGS.steps, network=FLAGS.network,
                               batch_size=FLAGS.batch_size, model_dir=model_dir)["export_dir"]
            seconds = time.time() - start
        model = api.load_model(export, precision="float32")
        psnr, ssim = [], []
        for noisy, clean in heldout:
            denoised = api.denoise(noisy, model)
            psnr.append(metrics.psnr(clean, denoised, data_range=255))
            ssim.append(metrics.ssim(clean, denoised, data_range=255))
        rows.append(dict(method=method, steps=model.metadata["steps"], psnr=psnr, ssim=ssim,
                         train_seconds=seconds))
    noisy_psnr = [metrics.psnr(c, n, data_range=255) for n, c in heldout]
    names = [n for n in data.DEMO_HELDOUT]
    print(f"\nheld-out demo images ({', '.join(names)}), Gaussian sigma 25; network {FLAGS.network}")
    columns = " ".join(f"{n:>10s}" for n in names)
    print(f"{'method':8s} {'steps':>6s} {columns} {'mean PSNR':>10s} {'mean SSIM':>10s} {'train s':>8s}")
    print(f"{'noisy':8s} {'':>6s} " + " ".join(f"{v:10.2f}" for v in noisy_psnr) + f" {np.mean(noisy_psnr):10.2f}")
    for r in rows:
        secs = f"{r['train_seconds']:8.0f}" if r["train_seconds"] else f"{'(reused)':>8s}"
        print(f"{r['method']:8s} {r['steps']:6d} " + " ".join(f"{v:10.2f}" for v in r["psnr"]) +
              f" {np.mean(r['psnr']):10.2f} {np.mean(r['ssim']):10.4f} {secs}")
    os.makedirs(FLAGS.root, exist_ok=True)
    with open(os.path.join(FLAGS.root, "results.json"), "w") as f:
        json.dump(dict(noisy=noisy_psnr, rows=rows, images=names), f, indent=1)


if __name__ == "__main__":
    run_main(main)
