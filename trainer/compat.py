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
import json
import os
import shutil
import sys
import tempfile
import types
import zipfile

import tensorflow as tf
import tf_keras as keras
from absl import logging

from trainer import histograms, step_count


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
# Callbacks with step hooks (trainer/callbacks.py, trainer/checkpointing.py)
# ---------------------------------------------------------------------------------------------

def takes_tensor_logs(callback):
    """Tells Keras that `callback`'s step hooks take the logs as tensors; returns it.

    Sets `Callback._supports_tf_logs`. Unless every callback with a step hook has it, Keras
    converts every step call's logs to numpy (a host-device sync per call: the loop waits for
    the step). `keras.callbacks.Callback.__init__` sets it False on the instance, so it must be
    set after that (a class attribute is shadowed). There is no public option.
    """
    callback._supports_tf_logs = True  # pylint: disable=protected-access
    return callback


def logs_stay_tensors(callback_list):
    """Whether Keras passes step logs to `callback_list`'s step hooks unconverted (reads the
    private `CallbackList._batch_hooks_support_tf_logs`; for tests and the loop benchmark)."""
    return keras.callbacks.CallbackList(callback_list)._batch_hooks_support_tf_logs  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# BackupAndRestore (trainer/checkpointing.py)
# ---------------------------------------------------------------------------------------------

class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore with what its public interface lacks:

    - `back_up(epoch, batch)`: a backup now (at an epoch end after the other callbacks, and on
      SIGTERM), resumed like the callback's own every-`save_freq`-steps backups;
    - `should_back_up(epoch, batch)`: a hook asked before EVERY backup, the callback's own
      included (override it; this one always says yes);
    - no per-step device write: the step a backup resumes after is set when it is written.

    All rest on the private `BackupAndRestore._backup(epoch, batch)`, the one method its
    `on_train_batch_end` / `on_epoch_end` call to write the training state
    (`WorkerTrainingState.back_up`, itself internal). The public callback backs up only on its
    own schedule (`save_freq`, or `save_before_preemption` on TPU/PSS preemption notices), and
    `WorkerTrainingState` is not exported.
    """

    def should_back_up(self, epoch, batch):  # pylint: disable=unused-argument
        return True

    def on_train_batch_begin(self, batch, logs=None):
        # Keras assigns the step to the backed-up `_ckpt_saved_batch` variable at every step
        # (a device write per step); `_backup` assigns it once, just before it writes.
        pass

    def back_up(self, epoch, batch=0):
        """Backs up the training state as "step `batch` of `epoch` done" (if should_back_up)."""
        self._backup(epoch=epoch, batch=batch)

    def _backup(self, epoch, batch=0):
        if self.should_back_up(epoch, batch):
            self._training_state._ckpt_saved_batch.assign(batch)
            super()._backup(epoch=epoch, batch=batch)


# ---------------------------------------------------------------------------------------------
# TensorBoard callback (trainer/training.py)
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


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback with no per-step host work between its writes, and its
    writers flushed at each epoch end (`flush_tensorboard`).

    Keras's `on_train_batch_end` calls `tf.summary.scalar` for every log at every step and lets
    `record_if(step % update_freq == 0)` drop them: ~1 ms a step on 2 CPU cores, a third of
    model1's cached-head step (`python -m trainer.bench --stages=loop`). Here the step logs are
    written only at the first step at or after each multiple of update_freq (exactly the
    multiples when `steps_per_execution` divides the steps per epoch), counted in Python from
    Keras's step variable `_train_step` as it is when fit starts, into Keras's own train writer
    `_train_writer`. The train graph, which Keras writes in the first step's hook (~0.1 s: alone
    enough for Keras's "on_train_batch_end is slow" warning), is written at the first epoch end
    instead. The weight histograms (`histogram_freq`) are counted by `histograms.histogram`
    (TensorBoard's own count costs 2.3 s per histogram epoch for VGG16's weights and gradients on
    2 CPU cores): `_log_weights` is overridden with the same tags; `write_images` is not
    supported. Also uses the private `_should_write_train_graph`, `_should_trace` (the profiler:
    its step hooks run as Keras's) and `_write_keras_model_train_graph`; no public option does
    any of it.
    """

    def __init__(self, *args, **kwargs):
        if kwargs.get("write_images"):
            raise ValueError("compat.TensorBoard does not write weight images")
        super().__init__(*args, **kwargs)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # After BackupAndRestore restored it (that callback goes first); read once per fit.
        self._steps = step_count.StepCount(int(self._train_step.numpy()))
        self._graph_pending, self._should_write_train_graph = self._should_write_train_graph, False

    def on_train_batch_begin(self, batch, logs=None):
        self._steps.begin(batch)
        super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._should_trace:
            super().on_train_batch_end(batch, logs)
        every = self.update_freq if isinstance(self.update_freq, int) else 0
        if self._steps.end(batch, every) and isinstance(logs, dict):
            with self._train_writer.as_default(step=self._steps.done), \
                    tf.summary.record_if(True):
                for name, value in logs.items():
                    tf.summary.scalar("batch_" + name, value)

    def on_epoch_end(self, epoch, logs=None):
        if self._graph_pending:
            self._write_keras_model_train_graph()
            self._graph_pending = False
        super().on_epoch_end(epoch, logs)
        flush_tensorboard(self)

    def _log_weights(self, epoch):
        with self._train_writer.as_default(), tf.summary.record_if(True):
            for layer in self.model.layers:
                for weight in layer.weights:
                    histograms.histogram(weight.name.replace(":", "_") + "/histogram", weight,
                                         step=epoch)
        self._train_writer.flush()


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
# Loading a saved model (trainer/artifacts.py)
# ---------------------------------------------------------------------------------------------

KERAS_ARCHIVE_FILES = ("config.json", "metadata.json", "model.weights.h5")


def load_model(path, safe_mode=True):
    """`keras.models.load_model(path, compile=False)` for a local .keras file, in a fifth of
    the time (`python -m trainer.bench --stages=load`).

    tf_keras 2.16 reads the archive's model.weights.h5 in place: h5py seeks back and forth in
    the zip member, and Python 3.11's zipfile answers each backward seek by reading the member
    again from its start, checksum included: 1.7 s of 2.1 s for a VGG16 model here
    (keras-team/keras#19793; Keras 3 extracts the file first, keras-team/keras#19852). This
    does the same: the model is built from the archive's config as load_model builds it, and the
    extracted weights file is read by `model.load_weights`, which runs load_model's per-layer
    loading on a local .weights.h5. Reaches into `tf_keras.src.saving.serialization_lib`'s
    `ObjectSharingScope` (load_model builds the model inside it, so that objects shared by two
    layers are built once; there is no public one). An archive with other files (assets) goes
    to keras.models.load_model.
    """
    from tf_keras.src.saving import serialization_lib  # pylint: disable=import-outside-toplevel

    with zipfile.ZipFile(path) as archive:
        if sorted(archive.namelist()) != sorted(KERAS_ARCHIVE_FILES):
            return keras.models.load_model(path, compile=False, safe_mode=safe_mode)
        config = json.loads(archive.read("config.json"))
        with tempfile.TemporaryDirectory() as tmp:
            weights = os.path.join(tmp, "model.weights.h5")
            with archive.open("model.weights.h5") as source, open(weights, "wb") as target:
                shutil.copyfileobj(source, target, 16 << 20)
            config["compile_config"] = None
            with serialization_lib.ObjectSharingScope():
                model = keras.saving.deserialize_keras_object(config, safe_mode=safe_mode)
            model.load_weights(weights)
    return model


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
