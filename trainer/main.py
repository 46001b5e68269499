"""Trains one of the three VGG16 transfer-learning models on converted TFRecords.

    python -m trainer.main --model=model1 --data_dir=DATA --model_dir=RUN [--flagfile=configs/model1.cfg]

Run the same command again after a kill or preemption and it resumes where it stopped.
"""
import json
import re
import sys

import tensorflow as tf
import tf_keras as keras
from absl import app, flags, logging

from tfrecords_tool import filesystems
from trainer import (artifacts, augment, callbacks, checkpointing, class_weights, data,
                     distribute, feature_cache, models, schedule)

flags.DEFINE_enum("model", "model1", ["model1", "model2", "model3"], "Which architecture (SPEC.md).")
flags.DEFINE_string("data_dir", None, "Directory (or gs:// / s3:// URL) with the converter's shards.")
flags.DEFINE_string("model_dir", None, "Where checkpoints, the backup and the final model go.")
flags.DEFINE_string("train_split", "train", "Split to train on.")
flags.DEFINE_string("val_split", "val", "Split to validate on every epoch ('' for none).")
flags.DEFINE_integer("image_size", None, "Input size; default (and must equal) the records' size.")
flags.DEFINE_integer("batch_size", 32, "Global batch size, divided over all replicas.")
flags.DEFINE_integer("epochs", 5, "Number of epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Default: one pass over the training split.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer for head and fine-tuned layers.")
flags.DEFINE_float("learning_rate", 1e-3, "Learning rate of the new head layers.")
flags.DEFINE_float("backbone_learning_rate", 1e-5, "Learning rate of fine-tuned VGG16 layers (model3).")
flags.DEFINE_enum("lr_schedule", "constant", schedule.SCHEDULES,
                  "constant: the rates above throughout; cosine: from them down to 0 at the last "
                  "step (--epochs x steps per epoch).")
flags.DEFINE_integer("warmup_steps", 0, "Raise the rates linearly from 0 over the first N steps.",
                     lower_bound=0)
flags.DEFINE_string("weights", "imagenet",
                    "VGG16 weights: 'imagenet' (downloaded by Keras), 'none', or a local weights file "
                    "(vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5) for offline clusters.")
flags.DEFINE_integer("seed", 0, "Seed for weights init, shuffling and augmentation.")
flags.DEFINE_bool("deterministic", False, "Deterministic input order and ops (slower).")
flags.DEFINE_integer("shuffle_buffer", 4096, "Records in the shuffle buffer.")
flags.DEFINE_integer("histogram_freq", 1, "Log gradient/weight histograms every N epochs (0: never).")
flags.DEFINE_integer("log_every_steps", 50, "Write step-level scalars every N steps.")
flags.DEFINE_integer("keep_epoch_checkpoints", 5,
                     "Keep the newest N checkpoints/epoch-NNN.weights.h5 (0: all).")
flags.DEFINE_integer("backup_every_steps", 200, "Back up the training state every N steps.")
flags.DEFINE_enum("early_stopping", "none", ["none", "val_loss", "reference"],
                  "val_loss: Keras EarlyStopping on val_loss with --patience; reference: the "
                  "reference notebook's rule (SPEC.md).")
flags.DEFINE_integer("patience", 3, "Epochs without val_loss improvement before val_loss stopping.")
flags.DEFINE_enum("augment", "none", augment.CHOICES,
                  "Document augmentation on the accelerator (no flips); see trainer/augment.py.")
flags.DEFINE_integer("log_augmented_images", 0, "Write this many augmented pages to TensorBoard.")
flags.DEFINE_string("class_weight", "none",
                    "none, balanced (from the training manifest's class counts) or a JSON file of "
                    "per-class weights.")
flags.DEFINE_bool("summary_only", False, "Print the model summary and parameter counts, then exit.")
flags.DEFINE_bool("feature_cache", True,
                  "Models 1/2 without augmentation: compute the frozen VGG16 features once and train "
                  "the head on them (exact, and much faster after the first pass).")
flags.DEFINE_bool("overwrite", False, "Train again even if {model_dir}/final.keras exists.")

FLAGS = flags.FLAGS  # --log_dir (absl's own flag) is the TensorBoard dir; default {model_dir}/logs.


class UsageError(Exception):
    """Wrong flags or data, found before training starts."""


def build(strategy, image_size, num_classes, total_steps):
    with strategy.scope():
        try:
            model = models.build_model(FLAGS.model, image_size, num_classes, FLAGS.weights,
                                       FLAGS.augment, FLAGS.seed)
        except ValueError as e:
            raise UsageError(str(e)) from e
        compile_(model, total_steps)
    return model


def compile_(model, total_steps):
    """Head at --learning_rate; model3's fine-tuned VGG16 layers at --backbone_learning_rate;
    both through --lr_schedule and --warmup_steps over `total_steps` optimizer steps."""
    def optimizer(peak):
        return _optimizer(schedule.learning_rate(peak, FLAGS.lr_schedule, FLAGS.warmup_steps,
                                                 total_steps))
    backbone_optimizer = optimizer(FLAGS.backbone_learning_rate) if FLAGS.model == "model3" else None
    models.compile_model(model, optimizer(FLAGS.learning_rate), backbone_optimizer)


def _optimizer(learning_rate):
    if FLAGS.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return keras.optimizers.Adam(learning_rate)


def cached_training(strategy, model, manifest, total_steps):
    """(head model, cached train dataset, cached val dataset): the head fits on VGG16 features."""
    with strategy.scope():  # the head Model must be created in the scope to fit distributed
        backbone, head = models.split_backbone_head(model)
        compile_(head, total_steps)

    def cached(split, training):
        split_manifest = data.read_manifest(FLAGS.data_dir, split)
        cache_dir = (f"{FLAGS.model_dir}/feature_cache/"
                     f"{split}-{feature_cache.cache_key(split_manifest, backbone)}")
        files = feature_cache.build(backbone, data.shard_files(FLAGS.data_dir, split), cache_dir,
                                    split_manifest["image_size"], split_manifest["image_format"],
                                    FLAGS.batch_size)
        return feature_cache.dataset(files, backbone, FLAGS.batch_size, training, seed=FLAGS.seed,
                                     deterministic=FLAGS.deterministic,
                                     shuffle_buffer=FLAGS.shuffle_buffer)

    logging.info("feature cache on: %.1f MB of VGG16 features for '%s'",
                 feature_cache.size_bytes(manifest["num_records"], backbone) / 1e6, FLAGS.train_split)
    return head, cached(FLAGS.train_split, True), cached(FLAGS.val_split, False) if FLAGS.val_split else None


def summary_only(strategy):
    model = build(strategy, FLAGS.image_size or 224, 16, total_steps=1)
    model.summary(expand_nested=False, print_fn=print)
    total, trainable = models.parameter_counts(model)
    print(f"{FLAGS.model}: total {total:,}; trainable {trainable:,}; "
          f"non-trainable {total - trainable:,}")


def train(strategy):
    filesystems.register(FLAGS.data_dir, FLAGS.model_dir, FLAGS.log_dir)
    chief = distribute.is_chief(strategy)
    final_path = f"{FLAGS.model_dir}/final.keras"
    if tf.io.gfile.exists(final_path) and not FLAGS.overwrite:
        print(f"{final_path} exists: training already finished (--overwrite to train again)")
        return
    checkpointing.check_writable(FLAGS.model_dir)

    manifest = data.read_manifest(FLAGS.data_dir, FLAGS.train_split)
    image_size = manifest["image_size"]
    if FLAGS.image_size and FLAGS.image_size != image_size:
        raise UsageError(f"--image_size={FLAGS.image_size} but the '{FLAGS.train_split}' records are "
                         f"{image_size}x{image_size}: convert again or drop the flag")
    replicas = strategy.num_replicas_in_sync
    if FLAGS.batch_size % replicas:
        raise UsageError(f"--batch_size={FLAGS.batch_size} is not divisible by the {replicas} replicas")
    num_classes = len(manifest["class_names"])
    num_workers = distribute.num_workers(strategy)

    def dataset(split, training):
        files = data.shard_files(FLAGS.data_dir, split)
        return data.image_dataset(files, image_size, manifest["image_format"], FLAGS.batch_size,
                                  training=training, seed=FLAGS.seed, deterministic=FLAGS.deterministic,
                                  shuffle_buffer=FLAGS.shuffle_buffer, num_workers=num_workers)

    if FLAGS.val_split:
        val_manifest = data.read_manifest(FLAGS.data_dir, FLAGS.val_split)
        if val_manifest["image_size"] != image_size:
            raise UsageError(f"'{FLAGS.val_split}' records are {val_manifest['image_size']}px, "
                             f"'{FLAGS.train_split}' records {image_size}px")
    try:
        weights = class_weights.class_weights(FLAGS.class_weight, manifest["class_counts"],
                                              manifest["class_names"])
    except ValueError as e:
        raise UsageError(str(e)) from e
    if weights:
        logging.info("%s", class_weights.describe(weights, manifest["class_names"]))
    steps = FLAGS.steps_per_epoch or max(1, manifest["num_records"] // FLAGS.batch_size)

    model = build(strategy, image_size, num_classes, FLAGS.epochs * steps)
    off_reason = feature_cache.why_not(FLAGS.model, FLAGS.augment, num_workers) if FLAGS.feature_cache \
        else "--nofeature_cache"
    if off_reason:
        logging.info("feature cache off: %s", off_reason)
        fitted, train_ds = model, dataset(FLAGS.train_split, True)
        val_ds = dataset(FLAGS.val_split, False) if FLAGS.val_split else None
    else:
        fitted, train_ds, val_ds = cached_training(strategy, model, manifest, FLAGS.epochs * steps)
    if chief:
        with tf.io.gfile.GFile(f"{FLAGS.model_dir}/class_names.json", "w") as f:
            json.dump(manifest["class_names"], f)
        with tf.io.gfile.GFile(f"{FLAGS.model_dir}/{artifacts.RUN_JSON}", "w") as f:
            json.dump(run_info(model, replicas, image_size, num_classes, steps), f, indent=1)

    log_dir = FLAGS.log_dir or f"{FLAGS.model_dir}/logs"
    stopping = {"none": [], "reference": [callbacks.ReferenceStopping()],
                "val_loss": [keras.callbacks.EarlyStopping("val_loss", patience=FLAGS.patience)],
                }[FLAGS.early_stopping]
    first, last = checkpointing.checkpoint_callbacks(FLAGS.model_dir, FLAGS.backup_every_steps,
                                                     model, chief, FLAGS.keep_epoch_checkpoints,
                                                     stateful=stopping)
    tensorboard = keras.callbacks.TensorBoard(log_dir, update_freq=FLAGS.log_every_steps,
                                              write_graph=True)
    middle = [
        # After `first` restored a backup: the optimizers' learning rates are the flags', not the
        # backed-up ones, so that a rerun with another --learning_rate (e.g. after a NaN) uses it.
        keras.callbacks.LambdaCallback(on_train_begin=lambda logs: _apply_learning_rates(fitted)),
        callbacks.LearningRateLogger(log_dir, FLAGS.log_every_steps, chief),
        callbacks.EpochTimer(FLAGS.batch_size),  # before TensorBoard: it logs what this adds
        tensorboard,
        # Summary writers flush every 2 minutes: flush each epoch so that a killed or preempted
        # run keeps the curves of the epochs it finished.
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: [
            writer.flush() for writer in getattr(tensorboard, "_writers", {}).values()]),
    ]
    log_augmented = FLAGS.log_augmented_images and FLAGS.augment != "none"
    if FLAGS.histogram_freq or log_augmented:
        images, labels = next(iter(train_ds))  # a fixed batch (building an iterator fills a shuffle buffer)
    if FLAGS.histogram_freq:
        middle.append(callbacks.GradientHistograms(log_dir, (images, labels), strategy,
                                                   freq=FLAGS.histogram_freq, is_chief=chief))
    if log_augmented:
        layer = model.get_layer(models.BACKBONE).get_layer("augmentation")
        middle.append(augment.AugmentedImages(log_dir, layer, images, max_images=FLAGS.log_augmented_images,
                                              is_chief=chief))
    middle += stopping

    logging.info("training %s on %d records (%d steps/epoch x %d epochs, global batch %d over %d "
                 "replicas (%s), policy %s); TensorBoard: tensorboard --logdir %s", FLAGS.model,
                 manifest["num_records"], steps, FLAGS.epochs, FLAGS.batch_size, replicas,
                 distribute.strategy_name(strategy), keras.mixed_precision.global_policy().name, log_dir)
    fitted.fit(train_ds, epochs=FLAGS.epochs, steps_per_epoch=steps, validation_data=val_ds,
               class_weight=weights, callbacks=first + middle + last, verbose=2)
    checkpointing.save_final_model(model, final_path, chief)
    if chief:
        print(f"final model: {final_path}\nTensorBoard logs: {log_dir}\n"
              f"  open them with: tensorboard --logdir {log_dir}")


def run_info(model, replicas, image_size, num_classes, steps_per_epoch):
    """run.json: what trainer.report compares between runs (flags as given, sizes, precision)."""
    total, trainable = models.parameter_counts(model)
    run_flags = {f.name: f.value for module in (sys.modules[__name__], distribute)
                 for f in FLAGS.get_flags_for_module(module)}
    return {"model": FLAGS.model, "total_params": total, "trainable_params": trainable,
            "precision": keras.mixed_precision.global_policy().name, "replicas": replicas,
            "image_size": image_size, "num_classes": num_classes,
            "steps_per_epoch": steps_per_epoch,
            "trainable_layers": [path for path, _ in callbacks.trainable_layers(model)],
            "flags": run_flags}


def _apply_learning_rates(model):
    if not schedule.is_constant(FLAGS.lr_schedule, FLAGS.warmup_steps):
        return  # the schedule was built from the flags; it follows the restored step counter
    for optimizer, rate in ((model.optimizer, FLAGS.learning_rate),
                            (getattr(model, "backbone_optimizer", None), FLAGS.backbone_learning_rate)):
        if optimizer is None:
            continue
        restored = float(keras.backend.get_value(optimizer.learning_rate))
        if abs(restored - rate) > 1e-6 * abs(rate):  # the optimizer keeps a float32
            logging.info("learning rate %g (the resumed state had %g)", rate, restored)
            optimizer.learning_rate = rate


def _data_loss_message(error):
    """One line naming the damaged file: TensorFlow's "corrupted record at N" does not."""
    lines = [line.strip() for line in (error.message or str(error)).splitlines() if line.strip()]
    detail = next((line for line in lines if "corrupted record" in line), lines[0] if lines else "")
    offset = re.search(r"corrupted record at (\d+)", detail)
    files = []
    for split in filter(None, (FLAGS.train_split, FLAGS.val_split)):
        try:
            files += data.shard_files(FLAGS.data_dir, split)
        except data.DataError:
            pass
    files += sorted(tf.io.gfile.glob(f"{FLAGS.model_dir}/feature_cache/*/*.tfrecord"))
    damaged = data.find_damaged_shard(files, int(offset.group(1)) if offset else None)
    if damaged is None:
        return (f"damaged TFRecord data ({detail}); find the shard with: python -m "
                f"tfrecords_tool.verify --data_dir={FLAGS.data_dir}")
    return (f"damaged TFRecord shard {damaged} ({detail}): convert it again (a file under "
            "feature_cache/ can simply be deleted, the next run computes it again)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = distribute.strategy_from_flags()
    try:
        if FLAGS.summary_only:
            summary_only(strategy)
            return
        if not FLAGS.data_dir or not FLAGS.model_dir:
            raise UsageError("--data_dir and --model_dir are required")
        train(strategy)
    except (UsageError, data.DataError, OSError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except tf.errors.DataLossError as e:
        print(f"error: {_data_loss_message(e)}", file=sys.stderr)
        sys.exit(2)
    except checkpointing.Preempted as e:
        print(str(e), file=sys.stderr)
        sys.exit(143)
    except checkpointing.NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    filesystems.run(main)
