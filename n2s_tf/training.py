"""The one trainer: a keras.Model whose train_step runs the configured method.

Every method (n2s, n2sp, n2v, n2v2, n2n, n2t) goes through the same step: mask the
input if the method masks, run the network, evaluate the method's loss. The loss is
formed from sums reduced over replicas (see losses.py), then divided by the number of
replicas because Keras sums the replicas' gradients: one device and N devices make
the same update on the same global batch.

`train(config)` is the whole run: strategy, data, network, optimizer, checkpoints
every K steps, exact resume, progress, TensorBoard scalars, validation PSNR, export.
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
from n2s_tf import distribute, losses, masking, metrics, networks
from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError
from n2s_tf.inference import denoise_array

CHECKPOINTS_KEPT = 3


class Denoiser(keras.Model):
    """A network plus the training step of one method; `call` is the network."""

    def __init__(self, network: keras.Model, config: TrainConfig, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.config = config
        names = ["loss"] + {"n2s": ["rec", "inv"], "n2sp": ["rec", "inv", "sigma"]}.get(config.model, [])
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    def call(self, x, training=False):
        return self.network(x, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _sample_seeds(self, batch_size):
        """One stateless seed per sample from (run seed, step, global sample index): masks
        repeat exactly on resume and do not depend on how the batch is split over replicas."""
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        first = tf.cast(replica, tf.int64) * tf.cast(batch_size, tf.int64)
        index = first + tf.range(tf.cast(batch_size, tf.int64))
        step = tf.cast(self.optimizer.iterations, tf.int64)
        return tf.stack([tf.fill([batch_size], tf.constant(self.config.seed, tf.int64)),
                         step * 1_000_003 + index], axis=1)

    def compute_method_loss(self, data, training: bool):
        """(loss, parts) of the configured method on one (per-replica) batch."""
        config, method = self.config, self.config.method
        x, target = data if isinstance(data, (tuple, list)) else (data, None)
        all_reduce = _replica_sum()
        if not method.masked:
            return losses.mse(target, self.network(x, training=training), all_reduce=all_reduce)
        x_masked, mask = masking.apply_mask_per_sample(
            x, self._sample_seeds(tf.shape(x)[0]), fraction=config.mask_fraction, method=config.masking_method)
        if method.loss == "masked_mse":
            y_masked = self.network(x_masked, training=training)
            return losses.masked_mse(x, y_masked, mask, all_reduce=all_reduce)
        # f(x) and f(x_masked) in one pass over the doubled batch: about 15 % faster on a
        # CPU than two passes; BatchNorm sees both halves (they differ in 0.5 % of pixels).
        y, y_masked = tf.split(self.network(tf.concat([x, x_masked], 0), training=training), 2)
        loss, parts = losses.n2s_loss(x, y, y_masked, mask, lmbd=config.lmbd, all_reduce=all_reduce)
        if method.loss == "n2sp":
            # Noise2SamePro: the same weights and optimizer, the noise level now learned.
            pro_loss, pro_parts = losses.n2sp_loss(x, y, y_masked, mask, all_reduce=all_reduce)
            use_pro = self.optimizer.iterations >= config.switch_step
            loss = tf.where(use_pro, pro_loss, loss)
            parts = dict(parts, sigma=tf.where(use_pro, pro_parts["sigma"], tf.sqrt(parts["rec"])))
        return loss, parts

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, parts = self.compute_method_loss(data, training=True)
            # Keras sums gradients over replicas; the loss is already global.
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = self.network.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self._track(loss, parts)

    def test_step(self, data):
        loss, parts = self.compute_method_loss(data, training=False)
        return self._track(loss, parts)

    def _track(self, loss, parts):
        for name, tracker in self.trackers.items():
            tracker.update_state(loss if name == "loss" else parts[name])
        logs = {name: tracker.result() for name, tracker in self.trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces logs there with strategy.reduce(MEAN, axis=0), which needs an axis.
            logs = {name: value[None] for name, value in logs.items()}
        return logs


def _replica_sum():
    """A callable that sums a tensor over replicas (None on a single replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return lambda value: context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def current_step(optimizer) -> int:
    """The optimizer's step count (a distributed variable under a strategy)."""
    return int(tf.convert_to_tensor(optimizer.iterations.value).numpy())


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with the reference's staircase halving; loss scaling for float16."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.lr, decay_steps=config.lr_decay_steps, decay_rate=0.5, staircase=True)
    optimizer = keras.optimizers.Adam(schedule)
    if config.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_denoiser(config: TrainConfig, channels: int) -> Denoiser:
    try:
        network = networks.build_network(config.network, ndim=config.ndim, channels=channels, **config.network_args)
    except (TypeError, ValueError) as error:  # an unknown or impossible --network_args value
        raise ConfigError(f"--network={config.network} --network_args: {error}") from None
    return Denoiser(network, config)


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
        load_initial_weights(model.network, config)
    start = current_step(optimizer)
    if chief:
        os.makedirs(model_dir, exist_ok=True)
        _atomic_write(os.path.join(model_dir, "config.json"), config.to_json())
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


def load_initial_weights(network: keras.Model, config: TrainConfig) -> None:
    """--init: copy the weights of an exported model into the freshly built network, which
    must be the same network (kind and options; the layer names may differ), or the same with
    more base_filters: then the trained filters are copied into the wider network, which starts
    out computing what the exported one computes (`networks.widen`)."""
    from n2s_tf.export import LoadedModel
    from n2s_tf.networks.widen import copy_into_wider

    try:
        trained = LoadedModel(config.init)
    except FileNotFoundError as error:
        raise ConfigError(f"--init: {error}") from None

    def options(network_config):  # what fixes the shapes and the meaning of the weights
        return {k: v for k, v in sorted(network_config.items()) if k not in ("name", "trainable", "dtype")}

    kind = trained.metadata["network"]
    built, wanted = options(trained.metadata["network_config"]), options(network.get_config())
    same_but_width = {**built, "base_filters": 0} == {**wanted, "base_filters": 0}
    if kind != config.network or not (same_but_width and built["base_filters"] <= wanted["base_filters"]):
        raise ConfigError(f"--init: {config.init} holds a {kind} network {built}, the flags build a "
                          f"{config.network} network {wanted}: pass its --network and --network_args "
                          f"(base_filters may be larger)")
    copy_into_wider(trained.keras_network(), network)  # at equal widths, a plain copy


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


def adapt(network: keras.Model, images, *, method: str = "n2s", steps: int = 200, lr: float = 1e-4,
          batch_size: int = 16, patch: int = 64, seed: int = 0, mixed_precision: str = "float32") -> keras.Model:
    """Self-supervised fine-tuning of a trained network on the very images it will denoise.

    A pretrained model has learned one relative noise level and one kind of content; a few
    hundred masked steps on the user's own image adapt it to both (no peer does this). Runs
    on the current device, without checkpoints; the network's weights are updated in place.
    mixed_precision must match the policy the network was built under.
    """
    spatial = [min(s.shape[:-1]) for s in images]
    side = min(patch, min(spatial)) // network.stride * network.stride
    if side < network.stride:
        raise ConfigError(f"an image smaller than {network.stride} pixels cannot be adapted to")
    # The network's own args, so that validate() refuses a masked method on a residual network.
    config = TrainConfig(model=method, steps=steps, pro_steps=steps // 4, network=network.name,
                         network_args=network.network_args, ndim=network.ndim,
                         patch_size=(side,) * network.ndim, batch_size=batch_size, lr=lr, seed=seed,
                         mixed_precision=mixed_precision).validate(stride=network.stride)
    inputs = [data_lib.standardize(image)[0] for image in images]
    for x in inputs:  # NaN/Inf pixels: repaired as inference.denoise_array repairs them, not trained on
        data_lib.repair_nonfinite(x)
    model = Denoiser(network, config)
    model.compile(optimizer=make_optimizer(config), jit_compile=config.jit_compile)  # not Keras' 'auto' (XLA)
    dataset = data_lib.patch_dataset(inputs, patch_size=config.patch_size, batch_size=batch_size, seed=seed)
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return network


def _run_defining(config: TrainConfig) -> dict:
    """The fields a resumed run must share with the original (others may change)."""
    values = json.loads(config.to_json())
    for free in ("resume", "steps", "checkpoint_every", "strategy", "cpu_devices", "model_dir"):
        values.pop(free)
    return values


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
