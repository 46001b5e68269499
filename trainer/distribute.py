"""Distribution strategy and numeric precision, chosen from settings.

`auto` picks MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, MirroredStrategy when
there are several GPUs (or `--cpu_replicas` > 1 on a CPU machine, for tests), else the default
strategy. Precision `auto` is mixed_float16 on GPU and float32 on CPU (mixed_float16 on CPU is
slower than float32).
"""
import contextlib
import dataclasses
import functools
import json
import os

import tensorflow as tf
import tf_keras as keras

from tfrecords_tool import errors
from tfrecords_tool.cli import setting

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class DistributionConfig:
    """Where a model runs: the settings every tool that runs a model shares."""
    strategy: str = setting("auto", "Distribution strategy: auto = multi_worker when TF_CONFIG "
                            "names a cluster, mirrored over several GPUs, else one device.",
                            choices=STRATEGIES)
    cpu_replicas: int = setting(1, "On a machine without GPUs, split the CPU into this many "
                                "logical devices and mirror over them (exercises multi-replica "
                                "code paths).", lower_bound=1)


def _cluster_spec():
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    return tf_config.get("cluster", {})


def make_strategy(name="auto", cpu_replicas=1):
    """The strategy for these settings. Call it before anything else touches TF devices when
    cpu_replicas > 1; later calls in the process that mean the same strategy get the same
    object (`_strategy`)."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        except RuntimeError as e:  # TF already running in this process (a notebook's 2nd call)
            if len(tf.config.list_logical_devices("CPU")) != cpu_replicas:
                raise errors.UsageError(
                    f"cpu_replicas={cpu_replicas}: this process already runs TensorFlow on "
                    f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s); "
                    "restart it to change the number") from e
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)

    if name == "auto":
        if sum(len(v) for v in _cluster_spec().values()) > 1:
            name = "multi_worker"
        elif len(gpus) > 1 or (not gpus and cpu_replicas > 1):
            name = "mirrored"
        else:
            name = "one_device"
    # Listing devices starts TensorFlow's context, after which MultiWorkerMirroredStrategy
    # cannot configure its collectives: only the mirrored strategy needs the CPU devices.
    cpu_devices = (tuple(d.name for d in tf.config.list_logical_devices("CPU"))
                   if name == "mirrored" and not gpus else None)
    return _strategy(name, cpu_devices)


@functools.lru_cache(maxsize=None)
def _strategy(name, cpu_devices):
    """One object per strategy and process: two MirroredStrategy objects over the same devices
    mix up their collective ops ("Shape mismatch in the collective instance"), and
    MultiWorkerMirroredStrategy can be made only once per process."""
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(list(cpu_devices) if cpu_devices else None)
    # The default strategy (one device): Keras' BackupAndRestore rejects OneDeviceStrategy.
    return tf.distribute.get_strategy()


def resolve_precision(precision="auto"):
    """The Keras policy name `precision` means on this machine."""
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


@contextlib.contextmanager
def precision_policy(precision):
    """Keras builds layers under its global policy: set it (`auto`: resolve_precision) for the
    block, then restore it. Yields the policy name."""
    previous = keras.mixed_precision.global_policy()
    precision = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield precision
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _cluster(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver, (resolver.cluster_spec().as_dict() if resolver else {})


def strategy_name(strategy):
    """The tf.distribute name of `strategy` (MultiWorkerMirroredStrategy's class is named
    CollectiveAllReduceStrategy)."""
    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "OneDeviceStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    return type(strategy).__name__


def num_workers(strategy):
    _, cluster = _cluster(strategy)
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def is_chief(strategy):
    """Only the chief writes checkpoints, logs and exports (worker 0 when there is no chief)."""
    resolver, cluster = _cluster(strategy)
    if not cluster:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster

