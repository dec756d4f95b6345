"""A whole training run: `train(config)`.

Strategy, data, network, optimizer, checkpoints every K steps, exact resume, progress,
TensorBoard scalars, validation PSNR, export. The step itself is `training.Denoiser`.

A run never silently loses its checkpoints: resume finds the newest checkpoint that
restores (checkpoints.py); a non-finite loss or weights, a checkpoint that cannot be
written (a full disk) and Ctrl-C / SIGTERM stop it with one line naming the last
complete checkpoint, and a model with non-finite weights is never exported. Resuming a
run already at --steps trains nothing and exports only if its export is missing.
"""

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from n2s_tf import checkpoints, distribute, files, metrics
from n2s_tf import data as data_lib
from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError, Terminated, UserError, one_line
from n2s_tf.inference import denoise_array
from n2s_tf.training import build_denoiser, current_step, make_optimizer

CHECKPOINTS_KEPT = 3
# Writing a checkpoint or an export: a full disk (ENOSPC, or TF's ResourceExhaustedError),
# a quota, a folder made read-only.
WRITE_ERRORS = (OSError, tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError)


class TrainingStopped(UserError):
    """The run stopped before --steps (non-finite loss, a write that failed); the message
    names the last complete checkpoint, from which --resume continues."""


def metadata(config: TrainConfig, network: keras.Model, step: int) -> dict:
    """What an export needs to be used correctly later (read by test_single.py)."""
    from n2s_tf import __version__

    return {
        "n2s_tf_version": __version__,
        "method": config.model,
        "network": config.network,
        "network_config": network.get_config(),
        "ndim": network.ndim,
        "channels": network.channels,
        "stride": int(network.stride),
        "receptive_field": int(network.receptive_field),
        "normalization": "per-image, per-channel standardization; output restored to input mean/std",
        "steps": int(step),
        "data": config.data or "demo",
        "config": json.loads(config.to_json()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _RunMonitor(keras.callbacks.Callback):
    """Progress line, TensorBoard scalars, checkpoints, validation PSNR, stop at --steps."""

    def __init__(self, config, manager, writer, validation, chief, log_every=50):
        super().__init__()
        self.config, self.manager, self.writer = config, manager, writer
        self.validation, self.chief, self.log_every = validation, chief, log_every
        self.start_time = self.start_step = None
        self.history = []
        self.tty = sys.stderr.isatty()

    def on_train_begin(self, logs=None):
        self.start_time = time.time()
        self.start_step = current_step(self.model.optimizer)

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model.optimizer)
        logs = {k: float(np.mean(v)) for k, v in (logs or {}).items()}
        # The epoch's running mean: it stays non-finite from the first bad step on.
        if not math.isfinite(logs.get("loss", 0.0)):
            raise TrainingStopped(f"the loss became {logs['loss']} at step {step}; {last_checkpoint(self.manager)} "
                                  f"(lower --lr, or check --data)")
        done = step >= self.config.steps
        if step % self.log_every == 0 or done:
            self._report(step, logs)
        if step % self.config.checkpoint_every == 0 or done:
            self._save(step)
            if self.validation and self.chief:
                logs["val_psnr"] = self._validate(step)
        if done:
            self.model.stop_training = True

    def _save(self, step):
        """Checkpoint `step`, unless its weights are not finite (the step that made them so
        still logged the finite loss it started from)."""
        if not weights_finite(self.model.network):
            raise TrainingStopped(f"the weights became non-finite by step {step}; {last_checkpoint(self.manager)} "
                                  f"(lower --lr, or check --data)")
        try:
            self.manager.save(checkpoint_number=step)
        except WRITE_ERRORS as error:
            checkpoints.remove_temp_folders(self.manager.directory)
            raise TrainingStopped(f"could not write the checkpoint of step {step} in {self.manager.directory} "
                                  f"({_reason(error)}); {last_checkpoint(self.manager)}") from None

    def _report(self, step, logs):
        elapsed = time.time() - self.start_time
        rate = (step - self.start_step) / max(elapsed, 1e-9)
        left = (self.config.steps - step) / rate if rate > 0 else float("nan")
        parts = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        line = (f"step {step}/{self.config.steps}  {parts}  {rate:.2f} steps/s  "
                f"{_duration(elapsed)} elapsed  {_duration(left)} left")
        if self.chief:
            end = "\r" if self.tty and step < self.config.steps else "\n"
            print(line.ljust(110), end=end, file=sys.stderr, flush=True)
        self.history.append(dict(step=step, steps_per_s=rate, **logs))
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for key, value in logs.items():
                    tf.summary.scalar(f"train/{key}", value)
                tf.summary.scalar("train/steps_per_s", rate)
                lr = self.model.optimizer.learning_rate
                tf.summary.scalar("train/learning_rate", float(lr(step) if callable(lr) else lr))

    def _validate(self, step):
        network = self.model.network
        fn = lambda x: network(x, training=False)  # noqa: E731
        scores = []
        for noisy, clean in self.validation:
            denoised = denoise_array(fn, noisy, network.stride, network.receptive_field)
            scores.append(metrics.psnr(clean, denoised, data_range=_data_range(clean)))
        value = float(np.mean(scores))
        if self.chief:
            print(f"\nstep {step}: validation PSNR {value:.2f} dB on {len(scores)} held-out images",
                  file=sys.stderr, flush=True)
        if self.writer is not None:
            with self.writer.as_default(step=step):
                tf.summary.scalar("validation/psnr", value)
        self.history.append(dict(step=step, val_psnr=value))
        return value


def weights_finite(network: keras.Model) -> bool:
    """Whether every weight (BatchNorm statistics included) is finite."""
    return all(np.isfinite(w).all() for w in network.get_weights())


def last_checkpoint(manager: tf.train.CheckpointManager) -> str:
    """Where the run can continue from, as the end of a one-line message."""
    latest = manager.latest_checkpoint
    if latest is None:
        return "no checkpoint was written yet"
    return f"the last complete checkpoint is {latest} (step {checkpoints.step_of(latest)}): continue with --resume"


def _reason(error: BaseException) -> str:
    """A write error's cause in one short line (TF's messages carry op names and paths)."""
    text = error.message if isinstance(error, tf.errors.OpError) else one_line(error)
    return " ".join(text.split())[:200]


def _data_range(clean):
    """255 for 8-bit-scale references (the usual PSNR convention), else their range."""
    if clean.min() >= 0 and clean.max() <= 255 and clean.max() > 1:
        return 255.0
    return float(clean.max() - clean.min())


def _duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def train(config: TrainConfig, export: bool = True, strategy: Optional[tf.distribute.Strategy] = None):
    """Run (or resume) a training; returns a dict with the history and the export path."""
    config.validate()
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy, config.cpu_devices)
    chief = distribute.is_chief(strategy)
    if config.mixed_precision != "float32":
        keras.mixed_precision.set_global_policy(f"mixed_{config.mixed_precision}")
    try:
        return _train(config, strategy, chief, export)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _train(config, strategy, chief, export):
    model_dir = config.model_dir
    chief_checkpoints = os.path.join(model_dir, "checkpoints")
    config = _with_network_options(config)
    _check_run_dir(config, chief)

    inputs, targets, validation = data_lib.load_training_data(config)
    channels = inputs[0].shape[-1]
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_denoiser(config, channels)
        config.validate(stride=model.network.stride)
        optimizer = make_optimizer(config)
        model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
        optimizer.build(model.network.trainable_variables)
        checkpoint = tf.train.Checkpoint(network=model.network, optimizer=optimizer)

    restored = _resume(checkpoint, chief_checkpoints, chief) if config.resume else None
    if restored is None and config.init:
        from n2s_tf.finetune import load_initial_weights

        load_initial_weights(model.network, config)
    start = current_step(optimizer)
    if start > config.steps:
        raise ConfigError(f"--steps={config.steps} is below step {start}, which the run in {model_dir} already "
                          f"reached: pass --steps above {start} to train on")
    # A finished run resumed again exports only if its export is missing.
    exported = start == config.steps and _exported_step(model_dir) == start
    # Every worker takes part in saving (it may be collective), but only the chief writes
    # into model_dir; the others write to a scratch folder removed at the end. Every worker
    # resumes from the chief's checkpoints.
    scratch = None if chief else tempfile.mkdtemp(prefix="n2s_worker_")
    manager = tf.train.CheckpointManager(checkpoint, chief_checkpoints if chief else scratch,
                                         max_to_keep=CHECKPOINTS_KEPT)
    if chief:
        os.makedirs(model_dir, exist_ok=True)
        files.write_text(os.path.join(model_dir, "config.json"), config.to_json())
        if start == config.steps:
            print(f"the run in {model_dir} is already at step {start} of {config.steps}: nothing to train"
                  f"{'; its export is in ' + os.path.join(model_dir, 'export') if exported else ''}",
                  file=sys.stderr, flush=True)
        else:
            print(f"{'resuming at' if start else 'starting'} step {start} of {config.steps}: "
                  f"{config.model} on {config.network} ({model.network.count_params():,} parameters), "
                  f"{strategy.num_replicas_in_sync} replica(s), {len(inputs)} training image(s)",
                  file=sys.stderr, flush=True)

    dataset = data_lib.patch_dataset(
        inputs, targets, patch_size=config.patch_size, batch_size=config.batch_size,
        seed=config.seed, worker=distribute.worker_index(strategy), start_step=start,
        augment=config.augment, swap_pairs=config.method.target == "noisy", noise=config.noise)
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs")) if chief else None
    monitor = _RunMonitor(config, manager, writer, validation, chief)
    if start < config.steps:
        every = config.checkpoint_every
        try:
            model.fit(dataset, epochs=math.ceil(config.steps / every), initial_epoch=start // every,
                      steps_per_epoch=every, callbacks=[monitor], verbose=0, shuffle=False)
        except (KeyboardInterrupt, Terminated) as stop:  # Ctrl-C, or SIGTERM in the CLI
            raise type(stop)(f"at step {current_step(optimizer)}; {last_checkpoint(manager)}") from None
    result = {"model": model, "history": monitor.history, "model_dir": model_dir, "export_dir": None}
    if export and not exported:
        path = _export(model.network, metadata(config, model.network, current_step(optimizer)),
                       os.path.join(model_dir, "export") if chief else scratch, manager)
        if chief:
            result["export_dir"] = path
            print(f"exported SavedModel to {path}", file=sys.stderr, flush=True)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _resume(checkpoint, directory, chief) -> Optional[str]:
    """Restore the newest checkpoint that restores; None when the run stopped before its
    first. The chief says what it skipped, removes interrupted saves and rewrites an index
    that no longer matches the files."""
    restored, notes = checkpoints.restore_newest(checkpoint, directory)
    if not chief:
        return restored
    removed = checkpoints.remove_temp_folders(directory)
    if removed:
        notes.append(f"removed {', '.join(removed)} (left by an interrupted save)")
    if restored and (notes or tf.train.latest_checkpoint(directory) != restored):
        checkpoints.rewrite_index(directory, restored)
    if restored is None:
        notes.append(f"no checkpoint yet in {directory}: starting over")
    for note in notes:
        print(f"note: {note}", file=sys.stderr, flush=True)
    return restored


def _export(network, meta, base_dir, manager) -> str:
    """export_model, refused for non-finite weights; a failed write is one line."""
    from n2s_tf.export import export_model

    if not weights_finite(network):
        raise TrainingStopped(f"the weights at step {meta['steps']} are not finite: no export written")
    try:
        return export_model(network, meta, base_dir)
    except WRITE_ERRORS as error:
        raise TrainingStopped(f"could not write the export in {base_dir} ({_reason(error)}); "
                              f"{last_checkpoint(manager)} to export again") from None


def _exported_step(model_dir) -> Optional[int]:
    """The step of the run's newest export; None without a readable one."""
    from n2s_tf.export import METADATA_FILE, resolve_export

    try:
        path = resolve_export(os.path.join(model_dir, "export"))
        with open(os.path.join(path, "assets", METADATA_FILE)) as f:
            return int(json.load(f)["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _with_network_options(config):
    """config with every network option written out, defaults included (those of the --init
    model where --network_args are not given): the run's config.json and export record them,
    so a later release that changes a default still resumes, fine-tunes and rebuilds it."""

    if config.init and not config.network_args:
        from n2s_tf.finetune import init_network_args

        config = dataclasses.replace(config, network_args=init_network_args(config))
    network = build_denoiser(config, channels=1).network  # the options do not depend on channels
    return dataclasses.replace(config, network_args=network.network_args)


def _check_run_dir(config, chief):
    """--resume needs a run with the same flags; a fresh run must not mix with an old one."""
    model_dir = config.model_dir
    config_path = os.path.join(model_dir, "config.json")
    if config.resume:
        if not os.path.exists(config_path):
            raise ConfigError(f"--resume: no run to resume in {model_dir} (config.json is missing)")
        saved = TrainConfig.from_json(open(config_path).read())
        if _run_defining(saved) != _run_defining(config):
            raise ConfigError(f"--resume: the flags differ from the run in {model_dir}; "
                              f"pass the same flags (or a new --model_dir)")
    # Only the chief judges a fresh run: other workers could see the chief's new checkpoints.
    elif chief and os.path.exists(os.path.join(model_dir, "checkpoints")):
        raise ConfigError(f"{model_dir} already holds a run: pass --resume to continue it or choose a new --model_dir")


def _run_defining(config: TrainConfig) -> dict:
    """The fields a resumed run must share with the original (others may change)."""
    values = json.loads(config.to_json())
    for free in ("resume", "steps", "checkpoint_every", "strategy", "cpu_devices", "model_dir"):
        values.pop(free)
    return values
