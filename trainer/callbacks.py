"""Training callbacks: per-layer gradient/weight histograms and the reference stopping rule."""
import os

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging


def _tag(variable):
    """'block5_conv1/kernel:0' -> 'block5_conv1/kernel'."""
    return variable.name.split(":")[0]


class GradientHistograms(keras.callbacks.Callback):
    """Every `freq` epochs, writes TensorBoard histograms of the loss gradient and of the value
    of every trainable variable (`gradients/<layer>/<var>`, `weights/<layer>/<var>`) and the
    scalar `gradients/global_norm`, to `log_dir/gradients`, at step = epoch.

    The gradient is computed on the fixed `batch` = (images, labels) of one global batch (every
    worker passes the same batch): each replica of `strategy` takes its slice, the gradients are
    summed across replicas (a collective under MultiWorkerMirroredStrategy: every worker runs
    this callback, only the one with `is_chief` writes). Under mixed_float16 the loss is scaled
    and the gradients unscaled with the model's LossScaleOptimizer; gradients are float32.
    The loss is the compiled one (`model.loss`) plus regularization losses.
    """

    def __init__(self, log_dir, batch, strategy=None, freq=1, is_chief=True):
        super().__init__()
        self.images, self.labels = (np.asarray(t) for t in batch)
        self.strategy = strategy  # None: the model's distribute_strategy
        self.freq = freq
        self.is_chief = is_chief
        self.log_dir = os.path.join(log_dir, "gradients")
        self._writer = None
        self._compute = None

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
            return [tf.zeros_like(v, tf.float32) if g is None else tf.cast(g, tf.float32)
                    for g, v in zip(grads, variables)]

        @tf.function
        def compute(images, labels):
            per_replica = strategy.run(replica_fn, args=(images, labels))
            return tf.nest.map_structure(
                lambda g: strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None), per_replica)

        return compute

    def _distributed_batch(self):
        def slice_for_replica(ctx):
            n, r = len(self.images), ctx.num_replicas_in_sync
            i = ctx.replica_id_in_sync_group
            start, end = i * n // r, (i + 1) * n // r
            return self.images[start:end], self.labels[start:end]

        return self.strategy.experimental_distribute_values_from_function(slice_for_replica)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.freq:
            return
        if self._compute is None:
            self.strategy = self.strategy or self.model.distribute_strategy
            self._compute = self._make_compute()
        images, labels = self._distributed_batch()
        grads = self._compute(images, labels)
        if not self.is_chief:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        # record_if(True): the Keras TensorBoard callback leaves a step-filtering record_if active.
        with self._writer.as_default(step=epoch), tf.summary.record_if(True):
            for g, v in zip(grads, self.model.trainable_variables):
                tf.summary.histogram(f"gradients/{_tag(v)}", g)
                tf.summary.histogram(f"weights/{_tag(v)}", tf.cast(v, tf.float32))
            tf.summary.scalar("gradients/global_norm", tf.linalg.global_norm(grads))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ReferenceStopping(keras.callbacks.Callback):
    """SPEC.md's reference stopping rule, checked after each epoch: stop when
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
        logs = logs or {}
        loss, val_loss, val_acc = (logs.get(k) for k in ("loss", "val_loss", "val_accuracy"))
        reason = None
        if loss is not None and val_loss is not None and val_loss - loss > self.gap:
            reason = (f"val_loss - loss = {val_loss:.4f} - {loss:.4f} = {val_loss - loss:.4f}"
                      f" > {self.gap}")
        if val_acc is not None:
            previous = self.val_accuracies[-self.patience:]
            self.val_accuracies.append(val_acc)
            if reason is None and len(previous) == self.patience and val_acc < min(previous):
                reason = (f"val_accuracy {val_acc:.4f} is lower than each of the previous "
                          f"{self.patience} ({', '.join(f'{a:.4f}' for a in previous)})")
        if reason:
            self.stop_reason = reason
            logging.info("ReferenceStopping: stopping after epoch %d: %s", epoch + 1, reason)
            self.model.stop_training = True


class LearningRateLogger(keras.callbacks.Callback):
    """Learning rate(s) for TensorBoard: added to the epoch logs, which the TensorBoard callback
    (placed after this one) writes as `epoch_learning_rate` / `epoch_backbone_learning_rate`, and
    written every `every_steps` optimizer steps as `batch_learning_rate` / ... in `log_dir/train`
    (the step counter is the optimizer's, restored on resume, so steps are never repeated). Each
    value is the rate of the optimizer's next step."""

    def __init__(self, log_dir=None, every_steps=0, is_chief=True):
        super().__init__()
        self._log_dir, self._every, self._chief = log_dir, every_steps, is_chief
        self._writer, self._step = None, 0

    def _rates(self):
        rates = {"learning_rate": _current_lr(self.model.optimizer)}
        backbone_optimizer = getattr(self.model, "backbone_optimizer", None)
        if backbone_optimizer is not None:
            rates["backbone_learning_rate"] = _current_lr(backbone_optimizer)
        return rates

    def on_train_begin(self, logs=None):
        self._step = int(self.model.optimizer.iterations.numpy())
        if self._log_dir and self._every and self._chief:
            self._writer = tf.summary.create_file_writer(f"{self._log_dir}/train")

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._writer is not None and self._step % self._every == 0:
            with self._writer.as_default(step=self._step), tf.summary.record_if(True):
                for name, rate in self._rates().items():
                    tf.summary.scalar(f"batch_{name}", rate)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._rates())

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


def _current_lr(optimizer):
    """The rate of the optimizer's next step, as Keras's TensorBoard callback logs a schedule's
    (`optimizer.learning_rate` would give the rate of its latest step)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    rate = optimizer._learning_rate  # pylint: disable=protected-access
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(optimizer.iterations)
    return float(keras.backend.get_value(rate))
