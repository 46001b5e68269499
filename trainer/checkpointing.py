"""Everything that makes training survive a killed or preempted VM.

- `BackupAndRestore` (Keras) keeps the full training state (weights, both optimizers, epoch and
  step) in `{model_dir}/backup`, every `--backup_every_steps` steps and at each epoch end; the same
  command run again resumes from it, mid-epoch included.
- SIGTERM (what cloud VMs send before preemption) sets a flag; at the end of the running step the
  state is backed up and training stops with `Preempted`.
- A non-finite loss stops training at once with `NonFiniteLoss`, before any epoch-end callback
  could save the broken weights, so the last checkpoints stay good.
"""
import json
import os
import re
import shutil
import signal
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from tfrecords_tool import errors
from tfrecords_tool import filesystems
from trainer import compat, step_count


class Preempted(errors.ToolError):
    """SIGTERM arrived; the training state has been backed up."""
    exit_code = errors.PREEMPTED


class NonFiniteLoss(errors.ToolError):
    """The training loss became NaN or infinite."""
    exit_code = errors.NON_FINITE_LOSS


class PeerLost(errors.ToolError):
    """Multi-worker training lost a worker: its collectives cannot complete."""
    exit_code = errors.PEER_LOST


def peer_lost_message(error, model_dir):
    """One line for the collective error a worker gets when another worker stops."""
    lines = [line.strip() for line in (error.message or str(error)).splitlines() if line.strip()]
    cause = next((line for line in lines if "aborted by" in line or "Socket closed" in line
                  or "unavailable" in line.lower()), lines[-1] if lines else type(error).__name__)
    peer = re.search(r"/job:(\w+)/replica:\d+/task:(\d+)", error.message or "")
    who = f"{peer.group(1)} {peer.group(2)}" if peer else "a worker"
    return (f"{who} of the cluster stopped or cannot be reached ({cause}): training cannot go "
            f"on without it; the last backup in {model_dir}/backup is kept: start every worker "
            "again with the same command to resume from it")


class StateBackup(keras.callbacks.Callback):
    """Completes `BackupAndRestore(save_freq=N steps)`: also backs up at each epoch end (after the
    other epoch-end callbacks, so put it last) and when SIGTERM arrives, then stops."""

    def __init__(self, backup):
        super().__init__()
        compat.takes_tensor_logs(self)  # reads no logs in its step hooks
        self._backup = backup
        self._signalled = False
        self._epoch = 0
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        logging.warning("SIGTERM received: backing up the training state after this step")
        self._signalled = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # At an epoch's last step the backup would mean "epoch done" before validation and the
        # epoch-end checkpoints ran: let on_epoch_end back up and stop instead.
        if self._signalled and not _is_last_step(self.params, batch):
            self._backup.back_up(epoch=self._epoch, batch=batch)
            raise Preempted(f"preempted at epoch {self._epoch + 1}, step {batch + 1}: state saved; "
                            "run the same command again to resume")

    def on_epoch_end(self, epoch, logs=None):
        # Saved as "last step of `epoch`", which BackupAndRestore resumes as the next epoch's start.
        self._backup.back_up(epoch=epoch, batch=self.params["steps"] - 1)
        if self._signalled:
            raise Preempted(f"preempted after epoch {epoch + 1}: state saved; "
                            "run the same command again to resume")


class EpochHistory(keras.callbacks.Callback):
    """Keeps each finished epoch's logs in `{model_dir}/history.json` (after the epoch-end backup,
    so put it after StateBackup) and, when a run resumes at epoch k, replays epochs < k into the
    `stateful` callbacks (stopping rules) so that they judge as if the run had never stopped."""

    def __init__(self, path, stateful, chief):
        super().__init__()
        self._path, self._stateful, self._chief = path, stateful, chief
        self._epochs = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._epochs is not None:
            return
        self._epochs = {}
        if tf.io.gfile.exists(self._path):
            with tf.io.gfile.GFile(self._path) as f:
                self._epochs = {int(e): v for e, v in json.load(f).items() if int(e) < epoch}
        for past in sorted(self._epochs):
            for callback in self._stateful:
                callback.on_epoch_end(past, dict(self._epochs[past]))
        if self._epochs:
            logging.info("resumed at epoch %d: replayed %d epochs into the stopping rules",
                         epoch + 1, len(self._epochs))

    def on_epoch_end(self, epoch, logs=None):
        self._epochs[epoch] = {k: float(v) for k, v in (logs or {}).items()}
        if self._chief:
            with tf.io.gfile.GFile(self._path, "w") as f:
                json.dump(self._epochs, f)


def _is_last_step(params, batch):
    steps = (params or {}).get("steps")
    return bool(steps) and batch >= steps - 1


class _StepBackup(compat.BackupAndRestore):
    """BackupAndRestore(save_freq=N steps) that skips the step backup at an epoch's last step.

    Keras resumes a backup taken at the last step as "this epoch is finished", so a kill during
    that epoch's validation or checkpoint writing would skip them for good. StateBackup backs
    up at the epoch end instead, after the epoch-end callbacks.
    """

    def on_train_batch_end(self, batch, logs=None):
        self._at_last_step = _is_last_step(self.params, batch)
        try:
            super().on_train_batch_end(batch, logs)
        finally:
            self._at_last_step = False

    def should_back_up(self, epoch, batch):
        if getattr(self, "_at_last_step", False):
            return False
        # A step's loss is computed before its update: never back up weights that the step just
        # broke (StopOnNonFiniteLoss stops at the next step); a rerun would resume from them.
        if not all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in self.model.trainable_weights):
            logging.warning("not backing up epoch %d step %d: non-finite weights", epoch + 1, batch + 1)
            return False
        return True


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises NonFiniteLoss when the epoch's running loss is NaN/inf, checked every
    `every_steps` steps (reading the loss is a host-device sync: a check at every step would let
    the host no longer run ahead of the accelerator), and at an epoch end (before the checkpoint
    callbacks) when the last step left non-finite weights or a non-finite val_loss. Once a step
    is non-finite the running mean stays so for the epoch, so no check misses it. Nothing broken
    is ever saved: the step backups check the weights themselves (_StepBackup.should_back_up)."""

    _epoch = 0

    def __init__(self, every_steps=100):
        super().__init__()
        compat.takes_tensor_logs(self)  # the loss stays a tensor between checks
        self._every, self._steps = every_steps, step_count.StepCount()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._steps.begin(batch)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss") if self._steps.end(batch, self._every) else None
        if loss is not None and not np.isfinite(float(loss)):
            raise NonFiniteLoss(f"loss became {float(loss)} by epoch {self._epoch + 1}, step "
                                f"{batch + 1}; stopped, the last checkpoints are from before it "
                                "(lower the learning rate?)")

    def on_epoch_end(self, epoch, logs=None):
        val_loss = (logs or {}).get("val_loss")
        broken = val_loss is not None and not np.isfinite(float(val_loss))
        if not broken:
            broken = not all(bool(tf.reduce_all(tf.math.is_finite(w)))
                             for w in self.model.trainable_weights)
        if broken:
            raise NonFiniteLoss(f"the weights became non-finite in epoch {epoch + 1} (val_loss "
                                f"{val_loss}); stopped before saving them, the last checkpoints "
                                "are from before it (lower the learning rate?)")


def check_writable(model_dir):
    """Fails early, before any training, on a model dir we cannot write to."""
    problem = filesystems.write_problem(model_dir)
    if problem:
        raise OSError(f"cannot write to --model_dir={model_dir}: {problem}")


class SaveCheckpoints(keras.callbacks.Callback):
    """Each epoch: `checkpoints/epoch-NNN.weights.h5` (the newest `keep` of them, 0 = all; each
    holds the whole model, ~59 MB with VGG16), and `best.keras` when val_accuracy improved.

    Saves `full_model`, which is not the fitted model when only the head trains on cached
    features. The best score lives in `best.json` so that a resumed run keeps comparing with it.
    """

    def __init__(self, model_dir, full_model, chief, keep=0):
        super().__init__()
        self._dir, self._full_model, self._chief, self._keep = model_dir, full_model, chief, keep
        self._best_json = f"{model_dir}/best.json"
        self._best = -1.0
        if tf.io.gfile.exists(self._best_json):
            with tf.io.gfile.GFile(self._best_json) as f:
                self._best = json.load(f)["val_accuracy"]

    def on_epoch_end(self, epoch, logs=None):
        accuracy = (logs or {}).get("val_accuracy")
        improved = accuracy is not None and accuracy > self._best
        if not self._chief:
            # Saving reads SyncOnRead (metric) variables, a collective under
            # MultiWorkerMirroredStrategy: every worker saves the same things, the others to a
            # temporary directory that is thrown away.
            tmp = tempfile.mkdtemp()
            try:
                self._full_model.save_weights(os.path.join(tmp, "epoch.weights.h5"))
                if improved:
                    self._full_model.save(os.path.join(tmp, "best.keras"))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if improved:
                self._best = float(accuracy)
            return
        _save_atomically(self._full_model.save_weights,
                         f"{self._dir}/checkpoints/epoch-{epoch + 1:03d}.weights.h5")
        if self._keep:
            saved = sorted(tf.io.gfile.glob(f"{self._dir}/checkpoints/epoch-*.weights.h5"))
            for old in saved[:-self._keep]:
                tf.io.gfile.remove(old)
        if improved:
            self._best = float(accuracy)
            _save_atomically(self._full_model.save, f"{self._dir}/best.keras")
            with tf.io.gfile.GFile(self._best_json, "w") as f:
                json.dump({"val_accuracy": self._best, "epoch": epoch + 1}, f)


def _save_atomically(save, path):
    """save(tmp) then rename to `path`: a kill mid-write never leaves a truncated `path`.

    Keras writes .weights.h5 files through h5py, which opens local files only: for a bucket
    path the file is written to a local temporary directory and copied up.
    """
    directory, name = path.rsplit("/", 1)
    # same extension, so the same file format
    with filesystems.atomic_write(path, f"{directory}/.tmp-{name}", local=True) as tmp:
        save(tmp)


def checkpoint_callbacks(model_dir, backup_every_steps, full_model, chief, keep_epochs=0,
                         stateful=(), steps_per_execution=1):
    """(first, last): callbacks to run before all others and after all others.

    First: stop on a non-finite loss; restore the backup, and back up every N steps (a multiple
    of `steps_per_execution`: Keras's callback counts its calls).
    Last: per-epoch and best checkpoints, then the epoch-end/SIGTERM backup, then the epoch
    history that a resumed run replays into the `stateful` callbacks.
    """
    tf.io.gfile.makedirs(f"{model_dir}/checkpoints")
    backup = _StepBackup(f"{model_dir}/backup",
                         save_freq=backup_every_steps // steps_per_execution)
    return ([StopOnNonFiniteLoss(), backup],
            [SaveCheckpoints(model_dir, full_model, chief, keep_epochs), StateBackup(backup),
             EpochHistory(f"{model_dir}/history.json", stateful, chief)])


def save_final_model(model, path, chief):
    """All workers save (collectives may run); only the chief's copy is kept."""
    if chief:
        model.save(path)
        return
    tmp = tempfile.mkdtemp()
    model.save(os.path.join(tmp, os.path.basename(path)))
    tf.io.gfile.rmtree(tmp)
