"""Reads back what a training run leaves in its model dir (for evaluate, predict and export).

    {model_dir}/final.keras        the model at the end of training
    {model_dir}/best.keras         the model of the epoch with the best val_accuracy
    {model_dir}/class_names.json   JSON list of the class names, in class-id order
    {model_dir}/best.json          {"val_accuracy", "epoch"} of best.keras (epochs counted from 1)
    {model_dir}/history.json       the logs of every finished epoch, keyed by epoch index
    {model_dir}/run.json           model, flags, parameter counts, precision, replicas
"""
import dataclasses
import json
import zipfile

import tensorflow as tf
from absl import logging

from tfrecords_tool import errors
from tfrecords_tool import filesystems
from tfrecords_tool.cli import setting
from tfrecords_tool.classes import RVL_CDIP_CLASSES
from trainer import compat
from trainer import models, schedule  # noqa: F401  (register the custom classes for load_model)

CHECKPOINTS = ("final", "best")
RUN_JSON = "run.json"


class ArtifactError(errors.ToolError):
    """The model dir does not hold what was asked for."""


@dataclasses.dataclass
class ModelChoice:
    """Which trained model a tool uses: the settings evaluate, predict and export share."""
    model_dir: str = setting(None, "Training run directory (holds final.keras / best.keras).")
    checkpoint: str = setting("final", "Which saved model: final (end of training) or best "
                              "(best val_accuracy).", choices=CHECKPOINTS)

    @property
    def model_path(self):
        return f"{self.model_dir}/{self.checkpoint}.keras"


def load_model(model_dir, checkpoint="final"):
    """`{model_dir}/{checkpoint}.keras`, loaded in safe mode without its optimizer (as
    `keras.models.load_model(path, compile=False)` loads it, faster: compat.load_model)."""
    if not model_dir:
        raise errors.UsageError("--model_dir is required")
    filesystems.register(model_dir)
    if not tf.io.gfile.isdir(model_dir):
        raise ArtifactError(f"model dir {model_dir} does not exist")
    path = f"{model_dir}/{checkpoint}.keras"
    if not tf.io.gfile.exists(path):
        others = [c for c in CHECKPOINTS if c != checkpoint
                  and tf.io.gfile.exists(f"{model_dir}/{c}.keras")]
        hint = (f"; use --checkpoint={others[0]}" if others
                else ": train a model there with `python -m trainer.main` first")
        raise ArtifactError(f"no model {path}{hint}")
    with filesystems.local_file(path) as local:
        try:
            return compat.load_model(local)
        except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError) as e:
            # A truncated copy, a flipped byte (zip CRC), another tool's file under the name.
            others = [c for c in CHECKPOINTS if c != checkpoint]
            raise ArtifactError(f"{path} is damaged or not a Keras model ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else 'no detail'}); "
                                f"copy it again, use --checkpoint={others[0]}, or train "
                                "again") from e


def trained_epochs(model_dir, checkpoint="final"):
    """How many epochs of training `{checkpoint}.keras` holds; None when the run did not say."""
    path = f"{model_dir}/{'best' if checkpoint == 'best' else 'history'}.json"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        record = json.load(f)
    return record["epoch"] if checkpoint == "best" else len(record)


def class_names(model_dir, num_classes):
    """The run's class names; the RVL-CDIP names for older runs without class_names.json."""
    path = f"{model_dir}/class_names.json"
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            names = json.load(f)
    elif num_classes == len(RVL_CDIP_CLASSES):
        logging.warning("no %s: assuming the RVL-CDIP class names", path)
        names = list(RVL_CDIP_CLASSES)
    else:
        raise ArtifactError(f"no {path}, and the model has {num_classes} classes, not RVL-CDIP's "
                            f"{len(RVL_CDIP_CLASSES)}: write the class names there as a JSON list")
    if len(names) != num_classes:
        raise ArtifactError(f"{path} names {len(names)} classes but the model has {num_classes}")
    return names
