"""`python train.py` / `n2s-train`: train a denoiser; flags map one to one onto TrainConfig.

    python train.py --model=n2sp --steps=8000                      # demo set
    python train.py --model=n2sp --data='mics/*.mrc' --model_dir=runs/mics
    python train.py --model=n2n --data=even/ --target=odd/ --patch_size=32,64,64
"""

from absl import flags

from n2s_tf.cli.common import parse_floats, parse_ints, parse_network_args, run_main

FLAGS = flags.FLAGS


def _define_flags():
    from n2s_tf.config import METHODS, WHITEN, TrainConfig

    d = TrainConfig()
    # Method and schedule
    flags.DEFINE_string("model", d.model, f"method: {', '.join(METHODS)}")
    flags.DEFINE_integer("steps", d.steps, "total optimizer steps")
    flags.DEFINE_integer("pro_steps", d.pro_steps, "n2sp: the last steps that learn the noise level")
    flags.DEFINE_float("lr", d.lr, "Adam learning rate (halved every --lr_decay_steps)")
    flags.DEFINE_integer("lr_decay_steps", d.lr_decay_steps, "staircase halving period")
    flags.DEFINE_float("lmbd", d.lmbd, "n2s: weight of the invariance term (2 = 2 sigma, sigma 1)")
    flags.DEFINE_string("masking", None, "replacement of masked pixels: gaussian, donut, uniform, median "
                                         "(default: the method's)")
    flags.DEFINE_float("mask_fraction", d.mask_fraction, "fraction of pixels masked per step")
    flags.DEFINE_integer("mask_span", d.mask_span, "structN2V: also hide the pixels within N of each masked one")
    # Network
    flags.DEFINE_string("network", d.network, "resunet, unet or encoder_decoder")
    flags.DEFINE_string("network_args", "", "network options, e.g. 'depth=3,base_filters=48' "
                                            "or a JSON object")
    # Data
    flags.DEFINE_string("data", None, "training images: file, folder or glob (default: built-in demo set)")
    flags.DEFINE_string("target", None, "folder of paired images with the same names "
                                        "(n2n: the other half; n2t: clean targets)")
    flags.DEFINE_string("noise", "", "n2t on clean --data: Gaussian noise added on the fly, std "
                                     "log-uniform between two fractions of the image's std, e.g. 0.05,1.0")
    flags.DEFINE_string("clean", None, "folder of clean references (same names as --data) for validation PSNR")
    flags.DEFINE_string("patch_size", "", "patch size, e.g. 64 or 64,64 (2D) or 16,64,64 (3D); "
                                          "default 64x64, or 16x64x64 for volumes")
    flags.DEFINE_integer("batch_size", None, "global batch size (default 16 in 2D, 4 in 3D)")
    flags.DEFINE_boolean("augment", d.augment, "random rot90 and flips")
    flags.DEFINE_enum("whiten", d.whiten, list(WHITEN), "whiten training images by their noise spectrum: "
                      "on = all (the model then always whitens), auto = those with correlated noise")
    # Run
    flags.DEFINE_string("model_dir", d.model_dir, "where checkpoints, logs and the export go")
    flags.DEFINE_integer("checkpoint_every", d.checkpoint_every, "checkpoint (and validate) every K steps")
    flags.DEFINE_string("init", None, "start from an exported model's weights (e.g. n2s_tf/models/cryoem); "
                                      "same --network; --network_args default to its own (base_filters may be larger)")
    flags.DEFINE_boolean("resume", d.resume, "continue the run in --model_dir from its last checkpoint")
    flags.DEFINE_integer("seed", d.seed, "makes a run repeatable")
    flags.DEFINE_string("strategy", d.strategy, "auto, one_device, mirrored or multi_worker")
    flags.DEFINE_integer("cpu_devices", d.cpu_devices, "split the CPU into N logical devices")
    flags.DEFINE_string("mixed_precision", d.mixed_precision, "float32, float16 or bfloat16")
    flags.DEFINE_boolean("jit_compile", d.jit_compile, "XLA-compile the training step")
    flags.DEFINE_boolean("export", True, "export a SavedModel at the end")


_define_flags()


def config_from_flags():
    """The TrainConfig the flags describe (without reading any image)."""
    from n2s_tf.config import TrainConfig

    ndim = _data_ndim(FLAGS.data) if not FLAGS.patch_size else None
    patch = parse_ints(FLAGS.patch_size, "patch_size") if FLAGS.patch_size else (
        (16, 64, 64) if ndim == 3 else (64, 64))
    if len(patch) == 1:
        patch = patch * 2
    batch = FLAGS.batch_size if FLAGS.batch_size is not None else (4 if len(patch) == 3 else 16)
    return TrainConfig(
        model=FLAGS.model, steps=FLAGS.steps, pro_steps=FLAGS.pro_steps, network=FLAGS.network,
        network_args=parse_network_args(FLAGS.network_args), ndim=len(patch), data=FLAGS.data,
        target=FLAGS.target, clean=FLAGS.clean, noise=parse_floats(FLAGS.noise, "noise") if FLAGS.noise else (),
        patch_size=patch, batch_size=batch, lr=FLAGS.lr,
        lr_decay_steps=FLAGS.lr_decay_steps, lmbd=FLAGS.lmbd, masking=FLAGS.masking,
        mask_fraction=FLAGS.mask_fraction, mask_span=FLAGS.mask_span, augment=FLAGS.augment, whiten=FLAGS.whiten,
        model_dir=FLAGS.model_dir,
        init=FLAGS.init,
        checkpoint_every=FLAGS.checkpoint_every, resume=FLAGS.resume, seed=FLAGS.seed,
        strategy=FLAGS.strategy, cpu_devices=FLAGS.cpu_devices, mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
    ).validate()


def _data_ndim(data):
    """Spatial dimensionality of the first training file (2 for the demo set)."""
    if data is None:
        return 2
    from n2s_tf import io

    return io.read_image(io.list_inputs(data)[0], mmap=True).ndim


def main(argv):
    config = config_from_flags()
    from n2s_tf.run import train

    train(config, export=FLAGS.export)


def run():
    run_main(main)


if __name__ == "__main__":
    run()
