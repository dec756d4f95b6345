"""A whole training run: `train(config)`.

Strategy, data, network, optimizer, checkpoints every K steps, exact resume, progress,
TensorBoard scalars, validation PSNR, export. The step itself is `training.Denoiser`.
"""

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

from n2s_tf import data as data_lib
from n2s_tf import distribute, files, metrics
from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError
from n2s_tf.inference import denoise_array
from n2s_tf.training import build_denoiser, current_step, make_optimizer

CHECKPOINTS_KEPT = 3


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
        done = step >= self.config.steps
        if step % self.log_every == 0 or done:
            self._report(step, logs)
        if step % self.config.checkpoint_every == 0 or done:
            self.manager.save(checkpoint_number=step)
            if self.validation and self.chief:
                logs["val_psnr"] = self._validate(step)
        if done:
            self.model.stop_training = True

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

    # Every worker takes part in saving (it may be collective), but only the chief writes
    # into model_dir; the others write to a scratch folder removed at the end. Every worker
    # resumes from the chief's checkpoints.
    scratch = None if chief else tempfile.mkdtemp(prefix="n2s_worker_")
    manager = tf.train.CheckpointManager(checkpoint, chief_checkpoints if chief else scratch,
                                         max_to_keep=CHECKPOINTS_KEPT)
    latest = tf.train.latest_checkpoint(chief_checkpoints)
    if config.resume and latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    elif config.init:
        from n2s_tf.finetune import load_initial_weights

        load_initial_weights(model.network, config)
    start = current_step(optimizer)
    if chief:
        os.makedirs(model_dir, exist_ok=True)
        files.write_text(os.path.join(model_dir, "config.json"), config.to_json())
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
        model.fit(dataset, epochs=math.ceil(config.steps / every), initial_epoch=start // every,
                  steps_per_epoch=every, callbacks=[monitor], verbose=0, shuffle=False)
    result = {"model": model, "history": monitor.history, "model_dir": model_dir, "export_dir": None}
    if export:
        from n2s_tf.export import export_model

        path = export_model(model.network, metadata(config, model.network, current_step(optimizer)),
                            os.path.join(model_dir, "export") if chief else scratch)
        if chief:
            result["export_dir"] = path
            print(f"exported SavedModel to {path}", file=sys.stderr, flush=True)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


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
