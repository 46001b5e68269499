"""Distribution strategy and numeric precision, chosen from flags.

`auto` picks MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, MirroredStrategy when
there are several GPUs (or `--cpu_replicas` > 1 on a CPU machine, for tests), else the default
strategy. Precision `auto` is mixed_float16 on GPU and float32 on CPU (mixed_float16 on CPU is
slower than float32).
"""
import json
import os

import tensorflow as tf
import tf_keras as keras
from absl import flags

flags.DEFINE_enum("strategy", "auto", ["auto", "mirrored", "multi_worker", "one_device"],
                  "Distribution strategy.")
flags.DEFINE_integer("cpu_replicas", 1,
                     "On a machine without GPUs, split the CPU into this many logical devices and "
                     "mirror over them (exercises multi-replica code paths).")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras mixed precision policy; auto = mixed_float16 on GPU, float32 otherwise.")

FLAGS = flags.FLAGS


def _cluster_spec():
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    return tf_config.get("cluster", {})


def make_strategy(name="auto", cpu_replicas=1):
    """Builds the strategy. Must run before anything else touches TF devices."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)

    if name == "auto":
        if sum(len(v) for v in _cluster_spec().values()) > 1:
            name = "multi_worker"
        elif len(gpus) > 1 or (not gpus and cpu_replicas > 1):
            name = "mirrored"
        else:
            name = "one_device"
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    # The default strategy (one device): Keras' BackupAndRestore rejects OneDeviceStrategy.
    return tf.distribute.get_strategy()


def set_precision(precision="auto"):
    """Sets the global Keras policy; returns its name."""
    if precision == "auto":
        precision = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_global_policy(precision)
    return precision


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


def strategy_from_flags():
    strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)
    set_precision(FLAGS.precision)
    return strategy
