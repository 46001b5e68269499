"""Training callbacks: per-layer gradient histograms and statistics, the reference stopping
rule, learning-rate logging and epoch timing. (Weight histograms: the Keras TensorBoard
callback's `histogram_freq`.)"""
import time

import os

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from trainer import compat, histograms, step_count


STATS_GROUP = "layer_stats"  # TensorBoard tag group: layer_stats/<statistic>/<layer path>
STATISTICS = ("gradient_norm", "weight_norm", "update_ratio", "dead_units")


def _tag(variable):
    """'block5_conv1/kernel:0' -> 'block5_conv1/kernel'."""
    return variable.name.split(":")[0]


def trainable_layers(model, prefix=""):
    """[(path, layer)] of the layers owning trainable variables, nested models' layers as
    'vgg16/block5_conv1'."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += trainable_layers(layer, f"{prefix}{layer.name}/")
        elif layer.trainable_weights:
            out.append((prefix + layer.name, layer))
    return out


def head_relu_layers(model):
    """The model's own (not nested) layers with a ReLU activation."""
    return [layer for layer in model.layers if not isinstance(layer, keras.Model)
            and getattr(layer, "activation", None) is keras.activations.relu]


class GradientHistograms(keras.callbacks.Callback):
    """Every `freq` epochs, writes TensorBoard histograms of the loss gradient of every
    trainable variable (`gradients/<layer>/<var>`), the scalar `gradients/global_norm`, and per
    trainable layer (kernel and bias together) the scalars `layer_stats/<statistic>/<layer
    path>`, to `log_dir/gradients`, at step = epoch:

    - gradient_norm: L2 norm of the layer's loss gradient on the fixed batch;
    - weight_norm: L2 norm of its weights;
    - update_ratio: |w_after - w_before| / |w_before| over the epoch's LAST optimizer step
      (a per-step figure, whatever the optimizer; with `steps_per_execution` = k, over the
      last k steps);
    - dead_units (ReLU layers of the model's own head only): share of units (channels) that
      are 0 for every example and position of the fixed batch.

    The gradient is computed on the fixed `batch` = (images, labels) of one global batch (every
    worker passes the same batch): each replica of `strategy` takes its slice, the gradients are
    summed across replicas (a collective under MultiWorkerMirroredStrategy: every worker runs
    this callback, only the one with `is_chief` writes). Under mixed_float16 the loss is scaled
    and the gradients unscaled with the model's LossScaleOptimizer; gradients are float32.
    The loss is the compiled one (`model.loss`) plus regularization losses.

    The weights' histograms are the Keras TensorBoard callback's (`histogram_freq=N`:
    `<variable name>_0/histogram` in `log_dir/train`, every weight, at epochs 0, N, 2N, ...;
    this callback logs at epochs N-1, 2N-1, ..., the same ones when N is 1).
    """

    def __init__(self, log_dir, batch, strategy=None, freq=1, is_chief=True,
                 steps_per_execution=1):
        super().__init__()
        compat.takes_tensor_logs(self)  # reads no logs in its step hooks
        self._steps_per_execution = steps_per_execution
        self.images, self.labels = (np.asarray(t) for t in batch)
        self.strategy = strategy  # None: the model's distribute_strategy
        self.freq = freq
        self.is_chief = is_chief
        self.log_dir = os.path.join(log_dir, "gradients")
        self._writer = None
        self._compute = None
        self._before_last_step = None
        self._epoch = 0

    def _loss_fn(self):
        loss = keras.losses.get(self.model.loss)
        if isinstance(loss, keras.losses.Loss):  # per-example values; we reduce ourselves
            return loss.call
        return loss

    def _make_compute(self):
        model, strategy = self.model, self.strategy
        loss_fn = self._loss_fn()
        global_batch = len(self.images)
        optimizer = model.optimizer
        scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)

        relu_layers = head_relu_layers(model)
        activations = keras.Model(model.inputs,
                                  [compat.layer_output_in(model, layer) for layer in relu_layers])

        def positive_counts(images):
            outputs = activations(images, training=False) if relu_layers else []
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            return [tf.reduce_sum(tf.reshape(tf.cast(a > 0, tf.float32), [-1, a.shape[-1]]), 0)
                    for a in outputs]

        def replica_fn(images, labels):
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                predictions = model(images, training=False)
                per_example = tf.cast(loss_fn(labels, predictions), tf.float32)
                loss = tf.reduce_sum(per_example) / global_batch
                if model.losses:
                    loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
                if scaled:
                    loss = optimizer.get_scaled_loss(loss)
            grads = tape.gradient(loss, variables)
            if scaled:
                grads = optimizer.get_unscaled_gradients(grads)
            grads = [tf.zeros_like(v, tf.float32) if g is None else tf.cast(g, tf.float32)
                     for g, v in zip(grads, variables)]
            return grads, positive_counts(images)

        @tf.function
        def compute(images, labels):
            per_replica = strategy.run(replica_fn, args=(images, labels))
            return tf.nest.map_structure(
                lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), per_replica)

        return compute, [layer.name for layer in relu_layers]

    def _distributed_batch(self):
        def slice_for_replica(ctx):
            n, r = len(self.images), ctx.num_replicas_in_sync
            i = ctx.replica_id_in_sync_group
            start, end = i * n // r, (i + 1) * n // r
            return self.images[start:end], self.labels[start:end]

        return self.strategy.experimental_distribute_values_from_function(slice_for_replica)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._before_last_step = None

    def on_train_batch_begin(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        last = batch + self._steps_per_execution - 1  # the last step of this call
        if (self._epoch + 1) % self.freq == 0 and (steps is None or last >= steps - 1):
            self._before_last_step = [tf.identity(v.read_value())
                                      for v in self.model.trainable_variables]

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.freq:
            return
        if self._compute is None:
            self.strategy = self.strategy or self.model.distribute_strategy
            self._compute, self._relu_names = self._make_compute()
        images, labels = self._distributed_batch()
        grads, counts = self._compute(images, labels)
        if not self.is_chief:
            return
        stats = self._layer_statistics(grads, counts)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        # record_if(True): the Keras TensorBoard callback leaves a step-filtering record_if active.
        with self._writer.as_default(step=epoch), tf.summary.record_if(True):
            for g, v in zip(grads, self.model.trainable_variables):
                histograms.histogram(f"gradients/{_tag(v)}", g)
            tf.summary.scalar("gradients/global_norm", tf.linalg.global_norm(grads))
            for statistic, layers in stats.items():
                for path, value in layers.items():
                    tf.summary.scalar(f"{STATS_GROUP}/{statistic}/{path}", value)
        self._writer.flush()

    def _layer_statistics(self, grads, counts):
        """{statistic: {layer path: float}} (see the class docstring)."""
        index = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
        stats = {name: {} for name in STATISTICS}
        squared = lambda tensors: sum(float(tf.reduce_sum(tf.square(t))) for t in tensors)
        for path, layer in trainable_layers(self.model):
            ids = [index[id(v)] for v in layer.trainable_variables if id(v) in index]
            if not ids:
                continue
            weights = [tf.cast(self.model.trainable_variables[i], tf.float32) for i in ids]
            stats["gradient_norm"][path] = squared(grads[i] for i in ids) ** 0.5
            stats["weight_norm"][path] = squared(weights) ** 0.5
            if self._before_last_step is not None:
                before = [tf.cast(self._before_last_step[i], tf.float32) for i in ids]
                change = squared(w - b for w, b in zip(weights, before)) ** 0.5
                norm = squared(before) ** 0.5
                stats["update_ratio"][path] = change / norm if norm else float("nan")
        for name, count in zip(self._relu_names, counts):
            stats["dead_units"][name] = float(np.mean(count.numpy() == 0))
        return stats

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ReferenceStopping(keras.callbacks.Callback):
    """The reference stopping rule (docs/models.md), checked after each epoch: stop when
    val_loss - loss > `gap` (default 0.25), or when the latest val_accuracy is lower than each of
    the `patience` (default 3) before it."""

    def __init__(self, gap=0.25, patience=3):
        super().__init__()
        self.gap = gap
        self.patience = patience
        self.val_accuracies = []
        self.stop_reason = None

    def on_train_begin(self, logs=None):
        self.val_accuracies = []
        self.stop_reason = None

    def on_epoch_end(self, epoch, logs=None):
        reason = reference_rule(logs or {}, self.val_accuracies, self.gap, self.patience)
        if reason:
            self.stop_reason = reason
            logging.info("ReferenceStopping: stopping after epoch %d: %s", epoch + 1, reason)
            self.model.stop_training = True


def reference_rule(logs, val_accuracies, gap=0.25, patience=3):
    """The reference rule on one epoch's `logs`: the reason to stop, or None. Appends the
    epoch's val_accuracy to `val_accuracies` (the earlier epochs' values)."""
    loss, val_loss, val_acc = (logs.get(k) for k in ("loss", "val_loss", "val_accuracy"))
    reason = None
    if loss is not None and val_loss is not None and val_loss - loss > gap:
        reason = f"val_loss - loss = {val_loss:.4f} - {loss:.4f} = {val_loss - loss:.4f} > {gap}"
    if val_acc is not None:
        previous = val_accuracies[-patience:]
        val_accuracies.append(val_acc)
        if reason is None and len(previous) == patience and val_acc < min(previous):
            reason = (f"val_accuracy {val_acc:.4f} is lower than each of the previous "
                      f"{patience} ({', '.join(f'{a:.4f}' for a in previous)})")
    return reason


class LearningRateLogger(keras.callbacks.Callback):
    """Learning rate(s) for TensorBoard: added to the epoch logs, which the TensorBoard callback
    (placed after this one) writes as `epoch_learning_rate` / `epoch_backbone_learning_rate`, and
    written every `every_steps` optimizer steps as `batch_learning_rate` / ... in `log_dir/train`
    (the step counter is the optimizer's, restored on resume), and once when a fit starts, at
    its first step (0, or where a resumed run resumes: that point may be written again, with
    the same value). Each value is the rate of the optimizer's next step. The write at the
    start also pays the process's first summary write (~80 ms: TensorBoard's summary module is
    imported then) before the step loop, where Keras would count it as a slow step hook."""

    def __init__(self, log_dir=None, every_steps=0, is_chief=True):
        super().__init__()
        compat.takes_tensor_logs(self)  # reads no logs in its step hooks
        self._log_dir, self._every, self._chief = log_dir, every_steps, is_chief
        self._writer, self._steps = None, step_count.StepCount()

    def _rates(self):
        """{name: rate tensor}: written as they are, without a wait for the device."""
        rates = {"learning_rate": _current_lr(self.model.optimizer)}
        backbone_optimizer = getattr(self.model, "backbone_optimizer", None)
        if backbone_optimizer is not None:
            rates["backbone_learning_rate"] = _current_lr(backbone_optimizer)
        return rates

    def on_train_begin(self, logs=None):
        self._steps = step_count.StepCount(int(self.model.optimizer.iterations.numpy()))
        if self._log_dir and self._every and self._chief:
            self._writer = tf.summary.create_file_writer(f"{self._log_dir}/train")
            self._write()

    def on_train_batch_begin(self, batch, logs=None):
        self._steps.begin(batch)

    def on_train_batch_end(self, batch, logs=None):
        if self._steps.end(batch, self._every) and self._writer is not None:
            self._write()

    def _write(self):
        with self._writer.as_default(step=self._steps.done), tf.summary.record_if(True):
            for name, rate in self._rates().items():
                tf.summary.scalar(f"batch_{name}", rate)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({name: float(rate) for name, rate in self._rates().items()})

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


def _current_lr(optimizer):
    """The rate of the optimizer's next step (a tensor), as Keras's TensorBoard callback logs a schedule's
    (`optimizer.learning_rate` would give the rate of its latest step)."""
    rate = compat.learning_rate_setting(optimizer)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return rate(optimizer.iterations)
    return tf.convert_to_tensor(rate)


class EpochTimer(keras.callbacks.Callback):
    """Adds `seconds` (the whole epoch, validation included) and `images_per_second` (training
    steps only: steps x global batch / their time) to the epoch logs, so that history.json and
    TensorBoard (`epoch_seconds`, ...) keep them. Place it before the TensorBoard callback."""

    def __init__(self, global_batch_size, clock=time.perf_counter):
        super().__init__()
        self._batch, self._clock = global_batch_size, clock
        self._start = self._train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end = self._clock(), None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_end is None:  # validation within fit
            self._train_end = self._clock()

    def on_epoch_end(self, epoch, logs=None):
        end = self._clock()
        steps = (self.params or {}).get("steps")
        if logs is None or self._start is None:
            return
        logs["seconds"] = end - self._start
        if steps:
            logs["images_per_second"] = steps * self._batch / ((self._train_end or end) - self._start)
