"""Choosing a tf.distribute strategy: one device, every local GPU, or many machines.

`--cpu_devices N` splits the CPU into N logical devices, so the multi-device code
path runs (and is tested) on a machine without GPUs. Multi-worker runs read their
cluster from TF_CONFIG or, on a Slurm allocation, from Slurm's variables.
"""

import json
import os

import tensorflow as tf

from n2s_tf.errors import ConfigError


def split_cpu(n: int) -> None:
    """Expose the CPU as n logical devices; must run before TensorFlow touches a device."""
    if n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        # Already initialized: fine only if it was split the same way before.
        if len(tf.config.list_logical_devices("CPU")) != n:
            raise ConfigError(f"--cpu_devices={n} must be set before TensorFlow initializes its devices") from None


def make_strategy(name: str = "auto", cpu_devices: int = 0) -> tf.distribute.Strategy:
    """The strategy named by --strategy; 'auto' uses every GPU, else the (split) CPU."""
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=_cluster_resolver())
    split_cpu(cpu_devices)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    devices = gpus or cpus
    if name == "one_device" or (name == "auto" and len(devices) == 1):
        return tf.distribute.OneDeviceStrategy(devices[0])
    if name in ("mirrored", "auto"):
        if gpus:
            return tf.distribute.MirroredStrategy(gpus)
        # NCCL is for GPUs; logical CPU devices reduce through one device.
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    raise ConfigError(f"--strategy={name!r} is not one of: auto, one_device, mirrored, multi_worker")


def _cluster_resolver():
    if "TF_CONFIG" in os.environ:
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise ConfigError(f"TF_CONFIG is not valid JSON: {error}") from None
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if "SLURM_JOB_ID" in os.environ:
        return tf.distribute.cluster_resolver.SlurmClusterResolver(port_base=int(os.environ.get("N2S_PORT", 8888)))
    raise ConfigError("--strategy=multi_worker needs TF_CONFIG (or a Slurm allocation) describing the cluster")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one process that writes checkpoints, summaries and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if "chief" in resolver.cluster_spec().as_dict():
        return task_type == "chief"
    return task_type in (None, "worker") and task_id == 0


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's index among the workers (0 on a single machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_id is not None else 0
