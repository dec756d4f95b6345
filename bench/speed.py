"""Training and inference speed, and inference memory, against the field, in one run.

    python bench/speed.py --out=runs/speed

1. Training throughput: pixels per second through one optimizer step of each n2s_tf
   network (batch 16, 64x64 patches; N2V, which runs the network once, and N2S, which
   runs it on the masked and the unmasked batch), after warm-up steps; and CAREamics'
   Noise2Void on the same batch and patch size.
2. Inference on the whole real micrograph (--micrograph, 3838 x 3710): wall time of the
   whole `test_single.py` process (start-up, model load, read, denoise, write) and its peak
   resident memory; CAREamics' prediction (with its default tile batch, and one tile at a
   time) and Topaz-Denoise's pretrained model on the same micrograph, each measured in its
   own process. Ratios are to n2s_tf. A panel of the same central crop of each output
   (each shown at its own mean +- 3 std) goes to --out/fei_panels.png.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from n2s_tf.cli.common import run_main  # noqa: E402
from n2s_tf.errors import ConfigError  # noqa: E402

flags.DEFINE_string("micrograph", os.path.join(ROOT, "..", "shared", "data", "fei-extended.mrc"),
                    "micrograph for the inference figures")
flags.DEFINE_string("networks", "unet,resunet,encoder_decoder", "n2s_tf networks to time in training")
flags.DEFINE_string("precisions", "float32,bfloat16", "training precisions to time")
flags.DEFINE_integer("warmup_steps", 5, "untimed training steps (tracing, caches)")
flags.DEFINE_integer("timed_steps", 30, "timed training steps")
flags.DEFINE_string("peers", "careamics_n2v,topaz", "peers to measure (empty: none)")
flags.DEFINE_integer("careamics_tile", 256, "CAREamics tile side for the one-tile-at-a-time prediction")
flags.DEFINE_string("out", "runs/speed", "folder for speed.json")
FLAGS = flags.FLAGS
BATCH, PATCH = 16, 64


def training_throughput(network, method, precision):
    """Pixels per second through an optimizer step of `network` trained with `method`."""
    import keras

    from n2s_tf import data, training
    from n2s_tf.config import TrainConfig

    keras.mixed_precision.set_global_policy("float32" if precision == "float32" else f"mixed_{precision}")
    try:
        config = TrainConfig(model=method, network=network, batch_size=BATCH, patch_size=(PATCH, PATCH),
                             mixed_precision=precision).validate()
        model = training.build_denoiser(config, channels=1)
        # As train() does: Keras' default jit_compile='auto' would time XLA, which the product leaves off.
        model.compile(optimizer=training.make_optimizer(config), jit_compile=config.jit_compile)
        image = np.random.default_rng(0).normal(size=(512, 512, 1)).astype(np.float32)
        dataset = data.patch_dataset([image], patch_size=config.patch_size, batch_size=BATCH)
        # One fit call, timed from the end of the warm-up steps (a second fit call would time
        # the start-up of a new data iterator as well).
        first, last = FLAGS.warmup_steps - 1, FLAGS.warmup_steps + FLAGS.timed_steps - 1
        marks = {}

        def mark(batch, logs):
            if batch in (first, last):
                marks[batch] = time.perf_counter()

        clock = keras.callbacks.LambdaCallback(on_train_batch_end=mark)
        model.fit(dataset, epochs=1, steps_per_epoch=FLAGS.warmup_steps + FLAGS.timed_steps, verbose=0,
                  callbacks=[clock])
        seconds = marks[last] - marks[first]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return FLAGS.timed_steps * BATCH * PATCH * PATCH / seconds


def n2s_tf_inference(micrograph, work):
    """The whole test_single.py process on the micrograph: wall seconds, peak RSS bytes."""
    log = os.path.join(work, "test_single.log")
    command = [sys.executable, os.path.join(ROOT, "test_single.py"), f"--input={micrograph}",
               f"--output={os.path.join(work, 'n2s_tf.mrc')}"]
    start = time.perf_counter()
    with open(log, "w") as f:
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own peak memory, unlike RUSAGE_CHILDREN
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise ConfigError(f"test_single.py failed, see {log}")
    return seconds, usage.ru_maxrss * 1024


def main(argv):
    if not os.path.isfile(FLAGS.micrograph):
        raise ConfigError(f"--micrograph={FLAGS.micrograph}: no such file")
    from n2s_tf import io

    results = {"training": [], "inference": []}
    # Inference first: a child process's peak-memory figure (ru_maxrss) starts from its parent's
    # peak at fork time on Linux, so the parent must still be small when the children run.
    image = io.read_image(FLAGS.micrograph)
    megapixels = image.data.shape[0] * image.data.shape[1] / 1e6
    peers_wanted = [p for p in FLAGS.peers.split(",") if p]
    with tempfile.TemporaryDirectory(prefix="speed_") as work:
        seconds, peak = n2s_tf_inference(FLAGS.micrograph, work)
        results["inference"].append(dict(tool="n2s_tf", how="test_single.py, whole process", seconds=seconds,
                                         peak_bytes=peak))
        if peers_wanted:
            import peers

            noisy = os.path.join(work, "micrograph.npy")
            np.save(noisy, np.asarray(image.data[..., 0], np.float32))
            del image
            if "careamics_n2v" in peers_wanted:
                # A model to predict with: 100 steps on the central 1024 x 1024 crop, then timed
                # prediction-only processes (load + predict) on the whole micrograph.
                crop = os.path.join(work, "crop.npy")
                rows, cols = np.load(noisy, mmap_mode="r").shape
                np.save(crop, np.load(noisy)[rows // 2 - 512:rows // 2 + 512, cols // 2 - 512:cols // 2 + 512])
                checkpoint = os.path.join(work, "careamics.ckpt")
                trained = peers.run_peer("careamics_n2v", inputs=crop, outputs=os.path.join(work, "crop_out.npy"),
                                         steps=100, batch_size=BATCH, patch_size=PATCH, save_model=checkpoint)
                results["training"].append(dict(tool="careamics", network="careamics unet", method="n2v",
                                                precision="float32",
                                                pixels_per_second=100 * BATCH * PATCH * PATCH
                                                / trained["train_seconds"]))
                for how, extra in ((f"CAREamics N2V, {FLAGS.careamics_tile}px tiles, default tile batch", {}),
                                   (f"CAREamics N2V, one {FLAGS.careamics_tile}px tile at a time",
                                    {"predict_batch_size": 1})):
                    result = peers.run_peer("careamics_n2v", inputs=noisy, outputs=os.path.join(work, "careamics.npy"),
                                            model=checkpoint, tile=FLAGS.careamics_tile, **extra)
                    results["inference"].append(dict(tool="careamics", how=how,
                                                     seconds=result["load_seconds"] + result["predict_seconds"],
                                                     peak_bytes=result["peak_rss_bytes"]))
            if "topaz" in peers_wanted:
                result = peers.run_peer("topaz_denoise", inputs=noisy, outputs=os.path.join(work, "topaz.npy"),
                                        result=os.path.join(work, "t.json"))
                results["inference"].append(dict(tool="topaz", how="Topaz-Denoise pretrained unet",
                                                 seconds=result["load_seconds"] + result["predict_seconds"],
                                                 peak_bytes=result["peak_rss_bytes"]))
        save_panels(work, FLAGS.out)

    for network in filter(None, FLAGS.networks.split(",")):
        for precision in filter(None, FLAGS.precisions.split(",")):
            for method in ("n2v", "n2s"):
                rate = training_throughput(network, method, precision)
                results["training"].append(dict(tool="n2s_tf", network=network, method=method,
                                                 precision=precision, pixels_per_second=rate))
                print(f"train n2s_tf {network} {method} {precision}: {rate / 1e3:.0f} kpx/s", file=sys.stderr)

    print_tables(results, megapixels)
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "speed.json"), "w") as f:
        json.dump(dict(results, megapixels=megapixels, micrograph=os.path.basename(FLAGS.micrograph)), f, indent=1)
    print(f"wrote {FLAGS.out}/speed.json")


def save_panels(work, out):
    """The raw micrograph and each tool's output, same central crop, side by side."""
    from n2s_tf import io, reports

    raw = io.read_image(FLAGS.micrograph).data[..., 0]
    outputs = {"n2s_tf (shipped cryoem, test_single.py)": io.read_image(os.path.join(work, "n2s_tf.mrc")).data[..., 0]}
    for name, label in (("careamics", "CAREamics N2V (100 steps)"), ("topaz", "Topaz-Denoise (pretrained)")):
        if os.path.exists(os.path.join(work, f"{name}.npy")):
            outputs[label] = np.load(os.path.join(work, f"{name}.npy"))
    os.makedirs(out, exist_ok=True)
    reports.plot_panels(raw, outputs, None, os.path.join(out, "fei_panels.png"), crop=768)


def print_tables(results, megapixels):
    ours = ([r for r in results["training"] if r["tool"] == "n2s_tf"] or results["training"]
            or [{"pixels_per_second": 1}])
    base = ours[0]["pixels_per_second"]
    print(f"\ntraining throughput, batch {BATCH}, {PATCH}x{PATCH} patches (pixels through one optimizer step)")
    print(f"{'tool':10s} {'network':16s} {'method':6s} {'precision':9s} {'kpx/s':>8s} {'vs first':>8s}")
    for r in results["training"]:
        print(f"{r['tool']:10s} {r['network']:16s} {r['method']:6s} {r['precision']:9s} "
              f"{r['pixels_per_second'] / 1e3:8.0f} {r['pixels_per_second'] / base:8.2f}")
    first = results["inference"][0]
    print(f"\ninference on the whole micrograph ({megapixels:.1f} megapixels)")
    print(f"{'how':48s} {'seconds':>8s} {'MP/s':>6s} {'peak GB':>8s} {'time x':>7s} {'memory x':>8s}")
    for r in results["inference"]:
        print(f"{r['how']:48s} {r['seconds']:8.1f} {megapixels / r['seconds']:6.2f} {r['peak_bytes'] / 1e9:8.2f} "
              f"{r['seconds'] / first['seconds']:7.2f} {r['peak_bytes'] / first['peak_bytes']:8.2f}")


if __name__ == "__main__":
    run_main(main)
