"""The one trainer: a keras.Model whose train_step runs the configured method.

Every method (n2s, n2sp, n2v, n2v2, n2n, n2t) goes through the same step: the forward
passes its row in `methods.METHODS` asks for, then the row's loss. The loss is formed
from sums reduced over replicas (see losses.py), then divided by the number of replicas
because Keras sums the replicas' gradients: one device and N devices make the same
update on the same global batch. The run around it (data, checkpoints, export) is in
`run.py`.
"""

import keras
import tensorflow as tf

from n2s_tf import masking, networks
from n2s_tf.config import TrainConfig
from n2s_tf.errors import ConfigError


class Denoiser(keras.Model):
    """A network plus the training step of one method; `call` is the network."""

    def __init__(self, network: keras.Model, config: TrainConfig, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.config = config
        names = ["loss", *config.method.parts]
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
        """(loss, parts) of the configured method on one (per-replica) batch: the forward
        passes its row asks for, then its objective."""
        config, method = self.config, self.config.method
        x, target = data if isinstance(data, (tuple, list)) else (data, None)
        y = y_masked = mask = None
        if method.passes == "plain":
            y = self.network(x, training=training)
        else:
            x_masked, mask = masking.apply_mask_per_sample(
                x, self._sample_seeds(tf.shape(x)[0]), fraction=config.mask_fraction,
                method=config.masking_method, span=config.mask_span)
            if method.passes == "masked":
                y_masked = self.network(x_masked, training=training)
            else:
                # f(x) and f(x_masked) in one pass over the doubled batch, cheaper on a CPU than
                # two; BatchNorm sees both halves (they differ only in the masked pixels).
                y, y_masked = tf.split(self.network(tf.concat([x, x_masked], 0), training=training), 2)
        return method.objective(x=x, target=target, y=y, y_masked=y_masked, mask=mask, lmbd=config.lmbd,
                                learned=self.optimizer.iterations >= config.switch_step,
                                all_reduce=_replica_sum())

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
