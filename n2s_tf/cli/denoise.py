"""`python test_single.py` / `n2s-denoise`: denoise images with an exported model.

    python test_single.py                                    # the shipped example image
    python test_single.py --input=mic.mrc --output=mic_dn.mrc --preview=mic_dn.png
    python test_single.py --input='mics/*.mrc' --output=denoised/ --tta
    python test_single.py --input=MotionCorr/job002/corrected_micrographs.star --output=Denoise/
    python test_single.py --input='mics/*.mrc' --output=denoised/ --skip_existing --shard=auto  # Slurm array

The output format follows the output's extension: MRC keeps the input's header
(voxel size, origin, axis order; statistics recomputed), TIFF and NPY keep float32
values unclipped, PNG is 8-bit. Inputs are never overwritten; outputs appear only
when complete. Many inputs run as a batch (n2s_tf/batch.py): a bad file is reported in
one line and the rest go on; the exit code is 1 if any failed.
"""

import functools
import os
import sys
from pathlib import Path

from absl import flags

from n2s_tf.cli.common import auto_if_unset, run_main
from n2s_tf.errors import ImageFileError

FLAGS = flags.FLAGS
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "noisy_camera.png"

flags.DEFINE_string("input", None, "image file, folder, glob or RELION micrographs .star file "
                                   "(default: the shipped example image)")
flags.DEFINE_string("input_b", None, "Noise2Noise: the other halves of --input (same file names); both are "
                                     "denoised and combined")
flags.DEFINE_boolean("calibrate_halves", True, "--input_b: mix mean output and mean half per Fourier ring "
                     "(weights from the halves)")
flags.DEFINE_string("output", None, "output file, or a folder for many inputs "
                                    "(default: <input name>_denoised<ext> in the current folder)")
flags.DEFINE_string("model", None, "exported model or training directory (default: the shipped model "
                                   "for the input's kind: cryoem_n2n or cryoet_n2n for MRC, else general)")
flags.DEFINE_integer("tile", None, "tile size in pixels (default: chosen from --max_memory)")
flags.DEFINE_float("max_memory", 2.0, "GB for one tile's network activations (sets the tile size); the image "
                                      "is held about 3 times besides")
flags.DEFINE_integer("adapt_steps", 0, "first fine-tune the model on each input for N self-supervised steps "
                                       "(a few hundred)")
flags.DEFINE_string("adapt_method", "n2s", "loss used by --adapt_steps: n2s, n2sp, n2v or n2v2")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "bfloat16"],
                  "auto = bfloat16 on CPUs with native bfloat16 (AVX512-BF16, AMX), else float32")
flags.DEFINE_boolean("tta", False, "8-fold test-time augmentation (rotations and flips; 8x slower)")
flags.DEFINE_boolean("calibrate", None, "mix prediction and input per Fourier ring (2x slower; "
                     "n2s_tf/calibration.py); unset = blind-spot models on white noise of one level")
flags.DEFINE_boolean("collaborative", False, "2D, white Gaussian noise: recover repeated texture by block "
                     "matching (4x slower; n2s_tf/collaborative.py)")
flags.DEFINE_enum("whiten", "auto", ["auto", "on", "off"], "whiten correlated noise with the image's own spectrum, "
                  "re-colour after; auto = blind-spot models on correlated noise")
flags.DEFINE_boolean("report_noise", False, "print each input's noise autocorrelation (lags 1-3) and "
                     "its residual's")
flags.DEFINE_string("preview", None, "also write an 8-bit PNG view (-3..+3 sigma); a folder for many inputs")
flags.DEFINE_boolean("keep_extended_header", False, "MRC: copy the input's extended header to the output")
flags.DEFINE_boolean("overwrite", False, "replace existing output files (inputs are never replaced)")
flags.DEFINE_boolean("skip_existing", False, "keep outputs that exist and denoise the rest (resumes a killed run)")
flags.DEFINE_boolean("overlap", True, "many inputs: read the next and write the last file while one is "
                                      "denoised")
flags.DEFINE_string("shard", None, "I/N: denoise only inputs I, I+N, I+2N, ... of the sorted list (0-based); "
                                   "auto: I and N from Slurm (array task, or srun task)")
flags.DEFINE_integer("workers", 1, "local worker processes, each on a shard (one GPU each where there are GPUs; "
                                   "CPU threads split between them); 0 = one per GPU", lower_bound=0)

flags.register_validator("tile", lambda v: v is None or v > 0, "must be a positive number of pixels")
flags.register_validator("max_memory", lambda v: 0 < v < float("inf"), "must be a positive number of GB")


def main(argv):
    from n2s_tf import batch

    inputs, star = batch.list_inputs(FLAGS.input) if FLAGS.input is not None else ([str(EXAMPLE)], None)
    jobs = batch.plan(inputs, FLAGS.output, FLAGS.preview, FLAGS.input_b)
    star_path = batch.star_output_path(star, jobs) if star else None
    index, count = batch.parse_shard(FLAGS.shard)
    mine = batch.shard(jobs, index, count)
    batch.check_existing(mine, FLAGS.overwrite, FLAGS.skip_existing)
    batch.make_folders(mine)
    workers = FLAGS.workers or max(1, len(batch.visible_gpus()))
    if workers > 1:
        code = batch.run_workers(_flags_for_workers(), workers, index, count)
    else:
        code = _denoise_all(mine, label=f"shard {index}/{count}" if count > 1 else "", many=len(jobs) > 1)
    if star:
        listed = batch.write_star(star, jobs, star_path)
        print(f"wrote {star_path} ({listed} of {len(jobs)} micrographs)", file=sys.stderr, flush=True)
    sys.exit(code)


def _denoise_all(jobs, label, many):
    """Denoise this process's jobs; the exit code: 1 if any failed. The model is loaded only
    when there is work (a resumed run that is complete costs no start-up)."""
    from n2s_tf import api, batch

    pending = [job for job in jobs if not (FLAGS.skip_existing and job.complete())]
    model = None
    if pending:
        model = api.load_model(FLAGS.model or api.default_model_path(pending[0].source),
                               precision=FLAGS.precision)
        print(f"model: {model.path} ({model.metadata['method']} on {model.metadata['network']}, "
              f"{model.metadata['steps']} steps, {model.precision})", file=sys.stderr)
        _warn_about_adaptation(model)
    steps = batch.Steps(read=functools.partial(_read, model=model), compute=functools.partial(_compute, model=model),
                        write=_write)
    summary = batch.run(jobs, steps, FLAGS.skip_existing, label=label, keep_going=many, overlap=many and FLAGS.overlap)
    return 1 if summary.failed else 0


def _warn_about_adaptation(model):
    from n2s_tf.config import METHODS

    if FLAGS.adapt_steps and METHODS[model.metadata["method"]].target:
        # Masked self-supervised steps pull a supervised model toward the blind-spot solution (its
        # loss is in docs/benchmarks.md); a residual network is refused by adapt.adapt.
        print(f"warning: --adapt_steps fine-tunes self-supervised, away from this {model.metadata['method']} "
              f"model's (non-blind) solution; it usually makes such a model worse", file=sys.stderr)


def _read(job, model):
    from n2s_tf import batch, io

    image = io.read_image(job.source)
    batch.check_fits(image, model)
    other = io.read_image(job.half) if job.half else None
    if other is not None and other.data.shape != image.data.shape:
        raise ImageFileError(f"{job.half} has shape {other.data.shape}, its other half {job.source} "
                             f"{image.data.shape}")
    return image, other


def _compute(job, images, model):
    image, other = images
    report = _noise_report(job.source, image.data, model)
    denoised = _denoise(image, model)
    if report and FLAGS.report_noise:
        _noise_report(f"{job.source} residual", image.data - denoised, model)
    if other is not None:
        denoised = _combine_halves(image, other, denoised, _denoise(other, model), model)
    return image, denoised


def _combine_halves(image, other, denoised, denoised_other, model):
    """api.combine_halves of two io.Images and their outputs (a stack plane by plane)."""
    import numpy as np

    from n2s_tf import api

    if image.kind == "stack":
        return np.stack([api.combine_halves(*planes, ndim=model.ndim, calibrate=FLAGS.calibrate_halves)
                         for planes in zip(image.data, other.data, denoised, denoised_other)])
    return api.combine_halves(image.data, other.data, denoised, denoised_other, ndim=model.ndim,
                              calibrate=FLAGS.calibrate_halves)


def _write(job, result):
    """Write the job's outputs; with --skip_existing those that exist are kept."""
    from n2s_tf import io

    image, denoised = result
    keep = FLAGS.skip_existing
    if not (keep and os.path.exists(job.target)):
        _refuse_existing(job.target)
        io.write_image(job.target, denoised, like=image, keep_extended_header=FLAGS.keep_extended_header,
                       overwrite=FLAGS.overwrite)
    if job.preview and not (keep and os.path.exists(job.preview)):
        _refuse_existing(job.preview)
        io.write_preview(job.preview, denoised, overwrite=FLAGS.overwrite)


def _refuse_existing(path):
    # Checked for all outputs before the run; this catches a file that appeared since.
    if os.path.exists(path) and not FLAGS.overwrite:
        raise ImageFileError(f"{path} appeared during the run; pass --overwrite to replace it")


WHITEN = {"auto": "auto", "on": True, "off": False}


def _noise_report(name, data, model):
    """--report_noise: one line on the noise of `data` (first channel); without it only the warning
    that a blind-spot model meets correlated noise it will not whiten (--whiten=off). The report or None."""
    from n2s_tf import api, noise

    warn = FLAGS.whiten == "off" and api.blind_spot(model, FLAGS.adapt_steps)
    if not (FLAGS.report_noise or warn):
        return None
    try:
        report = noise.noise_report(data[..., 0], model.ndim)
    except ValueError:
        print(f"{name}: too small to measure its noise", file=sys.stderr)
        return None
    if FLAGS.report_noise:
        print(f"{name}: {noise.summary_line(report)}", file=sys.stderr)
    if warn and report["verdict"] == "correlated":
        print(f"warning: {name}: correlated noise (lag 1 {report['lag1']:.2f}) and --whiten=off: a blind-spot "
              f"model trained on white noise passes the correlated part through", file=sys.stderr)
    return report


def _denoise(image, model):
    """Denoise an io.Image: each plane of a stack on its own, else the whole image or volume."""
    import numpy as np

    from n2s_tf import api

    tiling = dict(tile=FLAGS.tile, max_memory=FLAGS.max_memory * 1e9, tta=FLAGS.tta,
                  adapt_steps=FLAGS.adapt_steps, adapt_method=FLAGS.adapt_method,
                  calibrate=auto_if_unset(FLAGS.calibrate), collaborative=FLAGS.collaborative,
                  whiten=WHITEN[FLAGS.whiten])
    if image.kind == "stack":
        return np.stack([api.denoise(plane, model, **tiling) for plane in image.data])
    return api.denoise(image.data, model, progress=True, **tiling)


def _flags_for_workers():
    """This run's flags as given, for the worker processes (which get their own --shard, --workers)."""
    seen, arguments = set(), []
    for name in FLAGS:
        flag = FLAGS[name]
        if flag.present and id(flag) not in seen and flag.name not in ("shard", "workers"):
            seen.add(id(flag))
            arguments.append(flag.serialize())
    return arguments


def run():
    run_main(main)


if __name__ == "__main__":
    run()
