"""Every place the product reaches into a private or internal API of TensorFlow, tf_keras or
TensorBoard, in one module.

Each entry is a small named function (or, where a private hook must be overridden, one small
class) whose docstring says what it reaches into and why no public API does the job. Nothing
else in `trainer` or `tfrecords_tool` may touch `_private` attributes of these libraries or
import from `tensorflow.python` / `tf_keras.src`: when an upgrade breaks one, it breaks here,
and tests/test_compat.py (one test per entry, checking the behaviour the product relies on)
says which.

Not here because there is none left: `multiprocessing.Pool._pool` (tfrecords_tool/page_pool.py
is its own pool on public `multiprocessing.Process` / `connection.wait`); `os._exit` is
public, documented API despite its name.
"""
import contextlib
import sys
import types

import tensorflow as tf
import tf_keras as keras
from absl import logging


# ---------------------------------------------------------------------------------------------
# AutoGraph (trainer/__init__.py)
# ---------------------------------------------------------------------------------------------

def autograph_skip_tf_keras():
    """Tells AutoGraph not to convert `tf_keras` code, as it never converts `keras` code.

    Reaches into `tensorflow.python.autograph.core.config.CONVERSION_RULES` (the module-level
    tuple `conversion.is_allowlisted` walks) and prepends `DoNotConvert("tf_keras")`. TF 2.16
    lists `DoNotConvert("keras")` but not the tf_keras package Keras 2 moved to, so the first
    fit() of every run transpiled hundreds of tf_keras functions (~10 s per trace on 2 cores).
    The public `tf.autograph.experimental.do_not_convert` marks one function at a time, and
    only functions we own; there is no public way to exempt a whole package. Idempotent; our
    own code (trainer.*) is still converted.
    """
    from tensorflow.python.autograph.core import config  # pylint: disable=import-outside-toplevel

    if not any(getattr(rule, "_prefix", None) == "tf_keras" for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = ((config.DoNotConvert("tf_keras"),)
                                   + tuple(config.CONVERSION_RULES))


# ---------------------------------------------------------------------------------------------
# Optimizers (trainer/callbacks.py: the learning rate of the next step)
# ---------------------------------------------------------------------------------------------

def learning_rate_setting(optimizer):
    """The learning rate `optimizer` was given: its LearningRateSchedule, or the variable
    holding a constant rate (under a LossScaleOptimizer: the inner optimizer's).

    Reaches into `Optimizer._learning_rate`. The public `optimizer.learning_rate` returns, for
    a schedule, `_current_learning_rate`: the rate of the latest step already taken, not the
    schedule. Keras's own TensorBoard callback reads `_learning_rate` for the same reason
    (`TensorBoard._collect_learning_rate`); `get_config()` would rebuild a copy of the schedule
    on every call.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return optimizer._learning_rate  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# BackupAndRestore (trainer/checkpointing.py)
# ---------------------------------------------------------------------------------------------

class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore with the two things its public interface lacks:

    - `back_up(epoch, batch)`: a backup now (at an epoch end after the other callbacks, and on
      SIGTERM), resumed like the callback's own every-`save_freq`-steps backups;
    - `should_back_up(epoch, batch)`: a hook asked before EVERY backup, the callback's own
      included (override it; this one always says yes).

    Both rest on the private `BackupAndRestore._backup(epoch, batch)`, the one method its
    `on_train_batch_end` / `on_epoch_end` call to write the training state
    (`WorkerTrainingState.back_up`, itself internal). The public callback backs up only on its
    own schedule (`save_freq`, or `save_before_preemption` on TPU/PSS preemption notices), and
    `WorkerTrainingState` is not exported.
    """

    def should_back_up(self, epoch, batch):  # pylint: disable=unused-argument
        return True

    def back_up(self, epoch, batch=0):
        """Backs up the training state as "step `batch` of `epoch` done" (if should_back_up)."""
        self._backup(epoch=epoch, batch=batch)

    def _backup(self, epoch, batch=0):
        if self.should_back_up(epoch, batch):
            super()._backup(epoch=epoch, batch=batch)


# ---------------------------------------------------------------------------------------------
# TensorBoard callback (trainer/main.py flushes it each epoch)
# ---------------------------------------------------------------------------------------------

def flush_tensorboard(callback):
    """Flushes the summary writers of Keras's TensorBoard `callback` (train, validation);
    returns how many it flushed.

    Reaches into `TensorBoard._writers` ({"train": writer, "val": writer}, created lazily).
    Writers flush every 120 s (`tf.summary.create_file_writer(flush_millis=...)`), and the
    callback exposes neither its writers nor a flush: without this a killed or preempted run
    loses the curves of its last epochs. A missing attribute (an upgrade renamed it) is logged
    once and flushes nothing rather than stopping training.
    """
    writers = getattr(callback, "_writers", None)
    if writers is None:
        if not getattr(flush_tensorboard, "warned", False):
            logging.warning("compat.flush_tensorboard: the TensorBoard callback has no _writers "
                            "any more (tf_keras upgrade?): its events are flushed only every 2 min")
            flush_tensorboard.warned = True
        return 0
    for writer in writers.values():
        writer.flush()
    return len(writers)


# ---------------------------------------------------------------------------------------------
# Random layers (trainer/augment.py)
# ---------------------------------------------------------------------------------------------

def base_random_layer():
    """The base class of the augmentation layers: tf_keras's `BaseRandomLayer`.

    Reaches into `keras.__internal__.layers.BaseRandomLayer` (exported under `__internal__`
    only). It is what Keras's own random preprocessing layers use: with
    `force_generator=True` it owns a seeded `tf.random.Generator` created and tracked the
    way Keras needs (in the layer's distribution-strategy scope, so each replica draws its own
    stream; saved with the layer). No public Keras 2 class does this; a bare
    `tf.random.Generator` in a `keras.layers.Layer` is neither tracked nor per-replica.
    """
    return keras.__internal__.layers.BaseRandomLayer


def random_generator(layer):
    """The random generator of a `base_random_layer()` layer made with force_generator=True:
    has `random_uniform(shape, minval, maxval, dtype)` and `random_normal(shape, mean, stddev,
    dtype)`.

    Reaches into `BaseRandomLayer._random_generator` (a `backend.RandomGenerator`), the only way
    the layer exposes its generator; its public `seed` attribute is just the number.
    """
    return layer._random_generator  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# Functional models (trainer/callbacks.py: a layer shared by two models)
# ---------------------------------------------------------------------------------------------

def layer_output_in(model, layer):
    """`layer`'s output tensor in `model`'s graph (a layer called in two models, like the feature
    cache's head and the full model, has one output per call; `layer.output` is the first).

    Reaches into `Functional._network_nodes` (the set of "<layer>_ib-<node index>" keys of the
    nodes that belong to the model). Keras has no public "which of this layer's calls is in this
    model": `layer.inbound_nodes` lists every call, `model.get_layer` returns the layer, not
    the call.
    """
    for i in range(len(layer.inbound_nodes)):
        if f"{layer.name}_ib-{i}" in model._network_nodes:  # pylint: disable=protected-access
            return layer.get_output_at(i)
    return layer.output


# ---------------------------------------------------------------------------------------------
# ImageDataGenerator (trainer/bench.py: the reference notebook's loader)
# ---------------------------------------------------------------------------------------------

def image_data_generator_without_scipy():
    """Lets `keras.preprocessing.image.ImageDataGenerator` run identity transforms without
    SciPy; returns whether it had to (SciPy missing: a placeholder module is set).

    Reaches into `tf_keras.src.preprocessing.image` (the module the public class is defined
    in) and sets its module-level `scipy` name to a placeholder. `apply_transform` checks
    `scipy is None` before every image, although an identity transform (no augmentation) never
    calls SciPy; without SciPy that check is a NameError. The check reads the module's global,
    which only that module's namespace can provide; the public `keras.preprocessing.image`
    re-exports the class, not its globals.
    """
    module = sys.modules[keras.preprocessing.image.ImageDataGenerator.__module__]
    if hasattr(module, "scipy"):
        return False
    module.scipy = types.SimpleNamespace()
    return True


# ---------------------------------------------------------------------------------------------
# Op determinism (trainer/training.py)
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def op_determinism(enabled):
    """Deterministic ops inside the block when `enabled`, as before it afterwards, so that a
    `train(deterministic=True)` call leaves the process as it found it. TF exports only
    `tf.config.experimental.enable_op_determinism`; `disable_op_determinism` and
    `is_op_determinism_enabled` live in `tensorflow.python.framework.config`."""
    from tensorflow.python.framework import config as tf_config  # pylint: disable=import-outside-toplevel

    was_enabled = tf_config.is_op_determinism_enabled()
    if enabled and not was_enabled:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_enabled:
            tf_config.disable_op_determinism()


__all__ = ["autograph_skip_tf_keras", "learning_rate_setting", "BackupAndRestore",
           "flush_tensorboard", "base_random_layer", "random_generator", "layer_output_in",
           "image_data_generator_without_scipy", "op_determinism"]
