"""Trains one of the three models on converted TFRecords: the library behind `trainer.main`.

    from trainer import TrainConfig, train
    result = train(TrainConfig(model="model2", data_dir="data", model_dir="runs/model2", epochs=3))
    result.history["val_accuracy"]        # one value per epoch, resumed epochs included

A run killed or preempted resumes from its backup when `train` is called again with the same
model_dir; a finished run (final.keras exists) is not trained again unless `overwrite=True`.
"""
import contextlib
import dataclasses
import json
import math
import re
import signal
from typing import Dict, List, Optional

import tensorflow as tf
import tf_keras as keras
from absl import logging

from tfrecords_tool import errors
from tfrecords_tool import filesystems
from tfrecords_tool.cli import setting
from tfrecords_tool.manifest import read_json
from trainer import (artifacts, augment, callbacks, checkpointing, class_weights, compat, data,
                     distribute, feature_cache, models, schedule)

MODELS_DOC = "docs/models.md"


@dataclasses.dataclass
class TrainConfig(distribute.DistributionConfig):
    """Every setting of a training run; `python -m trainer.main` has one flag per field."""
    model: str = setting("model1", f"Which architecture ({MODELS_DOC}).",
                         choices=models.MODEL_NAMES)
    data_dir: Optional[str] = setting(
        None, "Directory (or gs:// / s3:// URL) with the converter's shards.")
    model_dir: Optional[str] = setting(
        None, "Where checkpoints, the backup and the final model go.")
    tensorboard_dir: Optional[str] = setting(
        None, "TensorBoard event files; default {model_dir}/logs.")
    train_split: str = setting("train", "Split to train on.")
    val_split: str = setting("val", "Split to validate on every epoch ('' for none).")
    image_size: Optional[int] = setting(
        None, "Input size; default (and must equal) the records' size.")
    batch_size: int = setting(32, "Global batch size, divided over all replicas.", lower_bound=1)
    epochs: int = setting(5, "Number of epochs.", lower_bound=1)
    steps_per_epoch: Optional[int] = setting(None, "Default: one pass over the training split.")
    precision: str = setting("auto", "Keras mixed precision policy; auto = mixed_float16 on GPU, "
                             "float32 otherwise.", choices=distribute.PRECISIONS)
    optimizer: str = setting("adam", "Optimizer for head and fine-tuned layers.",
                             choices=("adam", "sgd"))
    learning_rate: float = setting(1e-3, "Learning rate of the new head layers.")
    backbone_learning_rate: float = setting(
        1e-5, "Learning rate of the fine-tuned VGG16 layers (model3).")
    lr_schedule: str = setting(
        "constant", "constant: the rates above throughout; cosine: from them down to 0 at the "
        "last step (epochs x steps per epoch).", choices=schedule.SCHEDULES)
    warmup_steps: int = setting(0, "Raise the rates linearly from 0 over the first N steps.",
                                lower_bound=0)
    weights: str = setting(
        "imagenet", "VGG16 weights: 'imagenet' (downloaded by Keras), 'none', or a local weights "
        "file (vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5) for offline clusters.")
    seed: int = setting(0, "Seed for weights init, shuffling and augmentation.")
    deterministic: bool = setting(False, "Deterministic input order and ops (slower).")
    shuffle_buffer: int = setting(4096, "Records in the shuffle buffer.", lower_bound=1)
    histogram_freq: int = setting(
        1, "Log gradient/weight histograms every N epochs (0: never).", lower_bound=0)
    log_every_steps: int = setting(50, "Write step-level scalars every N steps.", lower_bound=1)
    keep_epoch_checkpoints: int = setting(
        5, "Keep the newest N checkpoints/epoch-NNN.weights.h5 (0: all).", lower_bound=0)
    backup_every_steps: Optional[int] = setting(
        None, "Back up the training state every N steps. Default: 200 image steps, 2000 steps "
        "of the head on the feature cache (a few ms each: a backup every 200 would cost ~7% of "
        "the run).", lower_bound=1)
    early_stopping: str = setting(
        "none", f"val_loss: Keras EarlyStopping on val_loss with patience; reference: the "
        f"reference notebook's rule ({MODELS_DOC}).", choices=("none", "val_loss", "reference"))
    patience: int = setting(3, "Epochs without val_loss improvement before val_loss stopping.",
                            lower_bound=1)
    augment: str = setting("none", "Document augmentation on the accelerator (no flips): "
                           "docs/models.md.", choices=augment.CHOICES)
    log_augmented_images: int = setting(
        0, "Write this many augmented pages to TensorBoard.", lower_bound=0)
    class_weight: str = setting(
        "none", "none, balanced (from the training manifest's class counts) or a JSON file of "
        "per-class weights.")
    steps_per_execution: Optional[int] = setting(
        None, "Training steps per call into TensorFlow (Keras steps_per_execution): fewer host "
        "round trips for small steps. Default: 10 for the head on the feature cache, 1 for "
        "image steps (docs/benchmarks.md#loop_overhead_cached). --log_every_steps and "
        "--backup_every_steps must be multiples of it.", lower_bound=1)
    jit_compile: str = setting(
        "auto", "XLA-compile the training step: on, off, or auto = on with a GPU, off on CPUs "
        "(where it measured slower: docs/benchmarks.md#loop_overhead_cached) and with "
        "--deterministic (XLA has no deterministic MaxPool gradient).",
        choices=("auto", "on", "off"))
    feature_cache: bool = setting(
        True, "Models 1/2 without augmentation: compute the frozen VGG16 features once and train "
        "the head on them (exact, and much faster after the first pass).")
    feature_cache_dir: Optional[str] = setting(
        None, "Where the feature cache goes (directory or gs:// / s3:// URL); default "
        "{data_dir}/feature_cache, shared by every run on that data (model1, model2, other "
        "learning rates and seeds), or {model_dir}/feature_cache when the data dir is not "
        "writable.")
    overwrite: bool = setting(False, "Train again even if {model_dir}/final.keras exists.")

    @property
    def log_dir(self):
        return self.tensorboard_dir or f"{self.model_dir}/logs"

    @property
    def final_model(self):
        return f"{self.model_dir}/final.keras"


@dataclasses.dataclass
class TrainResult:
    """What a finished `train` call leaves, and where."""
    model_dir: str
    final_model: str                      # {model_dir}/final.keras
    best_model: Optional[str]             # {model_dir}/best.keras (None: no val_split)
    tensorboard_dir: str
    history: Dict[str, List[float]]       # metric -> one value per epoch of the whole run
    trained_now: bool                     # False: the run had already finished
    is_chief: bool                        # this process wrote the files (multi-worker: one does)

    def summary(self):
        """What `python -m trainer.main` prints at the end."""
        if not self.trained_now:
            return (f"{self.final_model} exists: training already finished (--overwrite to "
                    "train again)")
        return (f"final model: {self.final_model}\nTensorBoard logs: {self.tensorboard_dir}\n"
                f"  open them with: tensorboard --logdir {self.tensorboard_dir}")


def train(config=None, strategy=None, **settings):
    """Trains `config` (or `TrainConfig(**settings)`) and returns a `TrainResult`.

    `strategy`: a tf.distribute strategy to train under; default made from config.strategy
    (make it once per process: TensorFlow fixes its devices at first use). Raises
    `errors.ToolError` subclasses, whose messages name settings as flags (`--batch_size=3`):
    UsageError, data.DataError, checkpointing.Preempted (the
    state is saved), checkpointing.NonFiniteLoss, checkpointing.PeerLost (multi-worker: another
    worker stopped).
    """
    config = config or TrainConfig(**settings)
    if not config.data_dir or not config.model_dir:
        raise errors.UsageError("--data_dir and --model_dir are required")
    filesystems.register(config.data_dir, config.model_dir, config.tensorboard_dir)
    keras.utils.set_random_seed(config.seed)
    strategy = strategy or distribute.make_strategy(config.strategy, config.cpu_replicas)
    if tf.io.gfile.exists(config.final_model) and not config.overwrite:
        logging.info("%s exists: training already finished (--overwrite to train again)",
                     config.final_model)
        return _result(config, False, distribute.is_chief(strategy))
    # The process-wide settings a run changes are set back afterwards: a notebook's next call
    # (or another model in the same script) starts from the same state.
    with distribute.precision_policy(config.precision), \
            compat.op_determinism(config.deterministic), \
            _sigterm_handler_restored():
        try:
            _fit(config, strategy)
        except tf.errors.DataLossError as e:
            raise data.DataError(_data_loss_message(config, e)) from e
        except (tf.errors.UnavailableError, tf.errors.AbortedError,
                tf.errors.CancelledError) as e:
            if distribute.num_workers(strategy) < 2:
                raise
            raise checkpointing.PeerLost(checkpointing.peer_lost_message(e, config.model_dir)) from e
    return _result(config, True, distribute.is_chief(strategy))


@contextlib.contextmanager
def _sigterm_handler_restored():
    """checkpointing.StateBackup handles SIGTERM during the run; the caller's handler after."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def model_summary(config):
    """(Keras summary text, total, trainable) of `config.model` at image_size (default 224)."""
    with distribute.precision_policy(config.precision):
        model = compiled_model(config, config.image_size or 224, 16, total_steps=1)
    lines = []
    model.summary(expand_nested=False, print_fn=lines.append)
    return "\n".join(lines), *models.parameter_counts(model)


def _result(config, trained_now, is_chief):
    best = f"{config.model_dir}/best.keras"
    by_epoch = read_json(f"{config.model_dir}/history.json") or {}
    history = {}
    for epoch in sorted(by_epoch, key=int):
        for key, value in by_epoch[epoch].items():
            history.setdefault(key, []).append(value)
    return TrainResult(config.model_dir, config.final_model,
                       best if tf.io.gfile.exists(best) else None, config.log_dir, history,
                       trained_now, is_chief)


def compiled_model(config, image_size, num_classes, total_steps):
    """config.model built and compiled as `train` fits it (call in the strategy's scope)."""
    try:
        model = models.build_model(config.model, image_size, num_classes, config.weights,
                                   config.augment, config.seed)
    except ValueError as e:
        raise errors.UsageError(str(e)) from e
    _compile(config, model, total_steps)
    return model


def backup_every_steps(config, cached_head):
    """config.backup_every_steps, or its default for a fit of the cached head or of images."""
    return config.backup_every_steps or (2000 if cached_head else 200)


def steps_per_execution(config, cached_head, steps_per_epoch):
    """config.steps_per_execution, or its default: for the cached head the largest divisor of
    10 that divides log_every_steps, the backup interval and the steps per epoch (so that
    step-level logs and backups fall on the same steps as with 1), for images 1."""
    if config.steps_per_execution:
        return config.steps_per_execution
    return (math.gcd(10, config.log_every_steps, backup_every_steps(config, cached_head),
                     steps_per_epoch) if cached_head else 1)


def jit_compile(config):
    """config.jit_compile as a bool (auto: on when a GPU is visible and ops need not be
    deterministic: XLA has no deterministic MaxPool gradient)."""
    if config.jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU")) and not config.deterministic
    return config.jit_compile == "on"


def _compile(config, model, total_steps, per_execution=1):
    """Head at learning_rate; model3's fine-tuned VGG16 layers at backbone_learning_rate; both
    through lr_schedule and warmup_steps over `total_steps` optimizer steps."""
    def optimizer(peak):
        rate = schedule.learning_rate(peak, config.lr_schedule, config.warmup_steps, total_steps)
        if config.optimizer == "sgd":
            return keras.optimizers.SGD(rate, momentum=0.9)
        return keras.optimizers.Adam(rate)

    backbone_optimizer = (optimizer(config.backbone_learning_rate)
                          if config.model == "model3" else None)
    models.compile_model(model, optimizer(config.learning_rate), backbone_optimizer,
                         steps_per_execution=per_execution,
                         jit_compile=jit_compile(config))


def compiled_head(config, strategy, model, total_steps, steps_per_epoch):
    """(backbone, head of `model` compiled as `train` fits it on the feature cache)."""
    with strategy.scope():  # the head Model must be created in the scope to fit distributed
        backbone, head = models.split_backbone_head(model)
        _compile(config, head, total_steps,
                 steps_per_execution(config, True, steps_per_epoch))
    return backbone, head


def head_on_cached_features(config, strategy, model, manifest, total_steps, steps_per_epoch):
    """(head model, cached train dataset, cached val dataset): the head fits on VGG16 features."""
    backbone, head = compiled_head(config, strategy, model, total_steps, steps_per_epoch)

    def cached(split, training):
        split_manifest = data.read_manifest(config.data_dir, split)
        files = data.shard_files(config.data_dir, split)
        counts = {f"{config.data_dir}/{shard['file']}": shard["num_records"]
                  for shard in split_manifest["shards"]}
        name = f"{split}-{feature_cache.cache_key(split_manifest, backbone, files)}"
        try:  # beside the data (shared by every run on it), else in the model dir
            cache_dir = feature_cache.choose_dir(
                [f"{root}/{name}" for root in feature_cache.roots(
                    config.feature_cache_dir, config.data_dir, config.model_dir)], files, counts)
        except OSError as e:
            raise errors.UsageError(str(e)) from e
        files = feature_cache.build(backbone, files, cache_dir, split_manifest["image_size"],
                                    split_manifest["image_format"], config.batch_size, counts)
        return feature_cache.dataset(files, backbone, config.batch_size, training,
                                     seed=config.seed, deterministic=config.deterministic,
                                     shuffle_buffer=config.shuffle_buffer)

    logging.info("feature cache on: %.1f MB of VGG16 features for '%s'",
                 feature_cache.size_bytes(manifest["num_records"], backbone) / 1e6,
                 config.train_split)
    return (head, cached(config.train_split, True),
            cached(config.val_split, False) if config.val_split else None)


def _check_data(config, strategy):
    """The training manifest, after checking the data fits the settings."""
    manifest = data.read_manifest(config.data_dir, config.train_split)
    image_size = manifest["image_size"]
    if config.image_size and config.image_size != image_size:
        raise errors.UsageError(
            f"--image_size={config.image_size} but the '{config.train_split}' records are "
            f"{image_size}x{image_size}: convert again or drop the flag")
    if config.jit_compile == "on" and config.deterministic:
        raise errors.UsageError("--jit_compile=on cannot run with --deterministic: XLA has no "
                                "deterministic MaxPool gradient (VGG16's pools)")
    every = config.steps_per_execution
    for name in ("log_every_steps", "backup_every_steps"):
        if every and (getattr(config, name) or every) % every:
            raise errors.UsageError(f"--{name}={getattr(config, name)} is not a multiple of "
                                    f"--steps_per_execution={every}")
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise errors.UsageError(
            f"--batch_size={config.batch_size} is not divisible by the {replicas} replicas")
    if config.val_split:
        val_manifest = data.read_manifest(config.data_dir, config.val_split)
        if val_manifest["image_size"] != image_size:
            raise errors.UsageError(
                f"'{config.val_split}' records are {val_manifest['image_size']}px, "
                f"'{config.train_split}' records {image_size}px")
    return manifest


def _fit(config, strategy):
    chief = distribute.is_chief(strategy)
    checkpointing.check_writable(config.model_dir)
    manifest = _check_data(config, strategy)
    image_size, num_classes = manifest["image_size"], len(manifest["class_names"])
    num_workers = distribute.num_workers(strategy)
    try:
        weights = class_weights.class_weights(config.class_weight, manifest["class_counts"],
                                              manifest["class_names"])
    except ValueError as e:
        raise errors.UsageError(str(e)) from e
    if weights:
        logging.info("%s", class_weights.describe(weights, manifest["class_names"]))
    steps = config.steps_per_epoch or max(1, manifest["num_records"] // config.batch_size)

    def dataset(split, training):
        return data.image_dataset(data.shard_files(config.data_dir, split), image_size,
                                  manifest["image_format"], config.batch_size, training=training,
                                  seed=config.seed, deterministic=config.deterministic,
                                  shuffle_buffer=config.shuffle_buffer, num_workers=num_workers)

    with strategy.scope():
        model = compiled_model(config, image_size, num_classes, config.epochs * steps)
    off_reason = (feature_cache.why_not(config.model, config.augment, num_workers)
                  if config.feature_cache else "--nofeature_cache")
    if off_reason:
        logging.info("feature cache off: %s", off_reason)
        fitted, train_ds = model, dataset(config.train_split, True)
        val_ds = dataset(config.val_split, False) if config.val_split else None
    else:
        fitted, train_ds, val_ds = head_on_cached_features(config, strategy, model, manifest,
                                                           config.epochs * steps, steps)
    if chief:
        with tf.io.gfile.GFile(f"{config.model_dir}/class_names.json", "w") as f:
            json.dump(manifest["class_names"], f)
        with tf.io.gfile.GFile(f"{config.model_dir}/{artifacts.RUN_JSON}", "w") as f:
            json.dump(_run_info(config, model, strategy.num_replicas_in_sync, image_size,
                                num_classes, steps), f, indent=1)

    callback_list = fit_callbacks(config, strategy, model, fitted, train_ds, chief, steps)
    logging.info("training %s on %d records (%d steps/epoch x %d epochs, global batch %d over %d "
                 "replicas (%s), policy %s, %d steps per execution, XLA %s); TensorBoard: "
                 "tensorboard --logdir %s", config.model, manifest["num_records"], steps,
                 config.epochs, config.batch_size, strategy.num_replicas_in_sync,
                 distribute.strategy_name(strategy), keras.mixed_precision.global_policy().name,
                 steps_per_execution(config, fitted is not model, steps),
                 "on" if jit_compile(config) else "off", config.log_dir)
    try:
        fitted.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps,
                   validation_data=val_ds,
                   validation_steps=_validation_steps(config, val_ds, fitted is not model, steps),
                   class_weight=weights, callbacks=callback_list, verbose=2)
    except BaseException:
        # fit() skips on_train_end when it raises (a NaN, a preemption): TensorBoard's writer
        # would stay the default summary writer, and the next fit in this process would write
        # to it closed. The other callbacks' on_train_end must not run (BackupAndRestore's
        # deletes the backup a preempted run resumes from).
        for callback in callback_list:
            if isinstance(callback, keras.callbacks.TensorBoard):
                callback.on_train_end()
        raise
    checkpointing.save_final_model(model, config.final_model, chief)


def _validation_steps(config, val_ds, cached_head, steps_per_epoch):
    """Every validation batch: Keras needs the count with steps_per_execution > 1 (None: until
    the data ends, as multi-worker validation needs)."""
    if val_ds is None or steps_per_execution(config, cached_head, steps_per_epoch) == 1:
        return None
    records = data.read_manifest(config.data_dir, config.val_split)["num_records"]
    return max(1, math.ceil(records / config.batch_size))


def fit_callbacks(config, strategy, model, fitted, train_ds, chief, steps_per_epoch):
    """Every callback `train` fits `fitted` with (`model`: the full model it saves; the same
    model unless the head trains on the feature cache): checkpointing's first ones, learning
    rates, timing, TensorBoard, histograms, stopping, checkpointing's last ones, in the order
    they must run. Files go to config.model_dir and config.log_dir."""
    log_dir = config.log_dir
    stopping = {"none": [], "reference": [callbacks.ReferenceStopping()],
                "val_loss": [keras.callbacks.EarlyStopping("val_loss", patience=config.patience)],
                }[config.early_stopping]
    cached_head = fitted is not model
    per_execution = steps_per_execution(config, cached_head, steps_per_epoch)
    first, last = checkpointing.checkpoint_callbacks(
        config.model_dir, backup_every_steps(config, cached_head), model, chief,
        config.keep_epoch_checkpoints,
        stateful=stopping, steps_per_execution=per_execution)
    # Weight histograms are Keras' (histogram_freq); gradients and layer_stats are ours below.
    tensorboard = compat.TensorBoard(log_dir, update_freq=config.log_every_steps,
                                     write_graph=True, histogram_freq=config.histogram_freq)
    middle = [
        # After `first` restored a backup: the optimizers' learning rates are the config's, not
        # the backed-up ones, so that a rerun with another learning_rate (e.g. after a NaN) uses it.
        keras.callbacks.LambdaCallback(
            on_train_begin=lambda logs: _apply_learning_rates(config, fitted)),
        callbacks.LearningRateLogger(log_dir, config.log_every_steps, chief),
        callbacks.EpochTimer(config.batch_size),  # before TensorBoard: it logs what this adds
        # Flushed each epoch (writers flush every 2 minutes): a killed or preempted run keeps
        # the curves of the epochs it finished.
        tensorboard,
    ]
    log_augmented = config.log_augmented_images and config.augment != "none"
    if config.histogram_freq or log_augmented:
        images, labels = next(iter(train_ds))  # a fixed batch (an iterator fills a shuffle buffer)
    if config.histogram_freq:
        middle.append(callbacks.GradientHistograms(log_dir, (images, labels), strategy,
                                                   freq=config.histogram_freq, is_chief=chief,
                                                   steps_per_execution=per_execution))
    if log_augmented:
        layer = model.get_layer(models.BACKBONE).get_layer("augmentation")
        middle.append(augment.AugmentedImages(log_dir, layer, images,
                                              max_images=config.log_augmented_images,
                                              is_chief=chief))
    return first + middle + stopping + last


def _run_info(config, model, replicas, image_size, num_classes, steps_per_epoch):
    """run.json: what trainer.report compares between runs (settings, sizes, precision)."""
    total, trainable = models.parameter_counts(model)
    return {"model": config.model, "total_params": total, "trainable_params": trainable,
            "precision": keras.mixed_precision.global_policy().name, "replicas": replicas,
            "image_size": image_size, "num_classes": num_classes,
            "steps_per_epoch": steps_per_epoch,
            "trainable_layers": [path for path, _ in callbacks.trainable_layers(model)],
            "flags": dataclasses.asdict(config)}


def _apply_learning_rates(config, model):
    if not schedule.is_constant(config.lr_schedule, config.warmup_steps):
        return  # the schedule was built from the config; it follows the restored step counter
    for optimizer, rate in ((model.optimizer, config.learning_rate),
                            (getattr(model, "backbone_optimizer", None),
                             config.backbone_learning_rate)):
        if optimizer is None:
            continue
        restored = float(keras.backend.get_value(optimizer.learning_rate))
        if abs(restored - rate) > 1e-6 * abs(rate):  # the optimizer keeps a float32
            logging.info("learning rate %g (the resumed state had %g)", rate, restored)
            optimizer.learning_rate = rate


def _data_loss_message(config, error):
    """One line naming the damaged file: TensorFlow's "corrupted record at N" does not."""
    lines = [line.strip() for line in (error.message or str(error)).splitlines() if line.strip()]
    detail = next((line for line in lines if "corrupted record" in line), lines[0] if lines else "")
    offset = re.search(r"corrupted record at (\d+)", detail)
    files = []
    for split in filter(None, (config.train_split, config.val_split)):
        try:
            files += data.shard_files(config.data_dir, split)
        except data.DataError:
            pass
    # Every place a run of this config may have put its cache (the model dir's: older runs too).
    for root in dict.fromkeys(feature_cache.roots(config.feature_cache_dir, config.data_dir,
                                                  config.model_dir)
                              + [feature_cache.fallback_root(config.model_dir)]):
        try:
            files += sorted(tf.io.gfile.glob(f"{root}/*/*.tfrecord"))
        except tf.errors.OpError:
            pass
    damaged = data.find_damaged_shard(files, int(offset.group(1)) if offset else None)
    if damaged is None:
        return (f"damaged TFRecord data ({detail}); find the shard with: python -m "
                f"tfrecords_tool.verify --data_dir={config.data_dir}")
    return (f"damaged TFRecord shard {damaged} ({detail}): convert it again (a file under "
            "feature_cache/ can simply be deleted, the next run computes it again)")
