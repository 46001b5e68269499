"""Frozen-backbone feature cache for models 1 and 2, shared by every run on the same data.

Those models train only the layers after a frozen VGG16, and nothing random happens before them
when augmentation is off, so the VGG16 features of each page never change. They are computed
once, one cache shard per source shard (same records, same order), into
`{feature_cache_dir}/{split}-{key}/` (default `{data_dir}/feature_cache`), and every later run
on the same data - model1 and model2, another head learning rate, another seed - trains its head
on them. The cached pipeline has the image pipeline's structure (same file shuffle, interleave,
shuffle buffer and seed), so with `--deterministic` both see the same batches and give the same
losses.

The key hashes what the features depend on and nothing else: the split's manifest and the byte
sizes of its shards (the source data), the image size, the backbone's weights (the same for
model1 and model2 with `imagenet` or a weights file; random per seed with `none`) and the
precision policy. The model name, the head, the learning rates, the batch size and the seed do
not enter it.

Each cache shard is written under a temporary name of its own (pid + random) and renamed into
place, then a sidecar `{shard}.json` (record count and byte size) is written the same way. A
shard counts as present only when its sidecar matches it, so a killed run, a truncated or
half-copied file, or a missing sidecar makes the next run compute that shard again (logged with
its name). Two runs building the same cache at the same moment each write their own
temporaries; the renames replace a complete shard with an identical complete one, so a reader
never sees part of a shard. The temporaries a killed run leaves are removed by a later build
once they are an hour old (a live writer's are seconds old).
"""
import hashlib
import json
import os
import secrets
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from tfrecords_tool import filesystems
from tfrecords_tool.manifest import read_json, write_json
from tfrecords_tool.records import bytes_feature, int64_feature, serialize_example
from trainer import data

# The cache records' keys: the backbone's output (raw bytes) and the class id.
FEATURES_KEY = "features"
LABEL_KEY = "label"
# Part of the key: a change of the cache's layout or record format means new cache directories.
FORMAT_VERSION = 2
DIR_NAME = "feature_cache"


def why_not(model_name, augment, num_workers):
    """None when the cache is exact for this run, else the reason it is off."""
    if model_name == "model3":
        return "model3 fine-tunes VGG16 layers, so its features change every step"
    if augment not in (None, "none"):
        return f"--augment={augment} changes every page every step"
    if num_workers > 1:
        return "multi-worker training reads each worker's own shards; the cache is single-worker"
    return None


def default_root(data_dir):
    """Where the caches of `data_dir`'s splits go unless --feature_cache_dir says otherwise."""
    return f"{data_dir}/{DIR_NAME}"


def fallback_root(model_dir):
    """Where a run's cache goes when the data dir is not writable."""
    return f"{model_dir}/{DIR_NAME}"


def roots(feature_cache_dir, data_dir, model_dir):
    """The cache roots a run tries in order: --feature_cache_dir alone, else beside the data,
    then in the model dir."""
    if feature_cache_dir:
        return [feature_cache_dir]
    return [default_root(data_dir), fallback_root(model_dir)]


def cache_key(manifest, backbone, files=()):
    """16 hex digits naming the features of the split of `manifest` (shards `files`) through
    `backbone` under the current precision policy."""
    sizes = [tf.io.gfile.stat(path).length for path in files]
    digest = hashlib.sha1(json.dumps(
        {"format": FORMAT_VERSION, "manifest": manifest, "shard_bytes": sizes,
         "image_size": manifest["image_size"], "input_shape": list(backbone.input_shape[1:]),
         "output_shape": list(backbone.output_shape[1:])}, sort_keys=True).encode())
    for weight in backbone.weights:
        digest.update(weight.numpy().tobytes())
    digest.update(keras.mixed_precision.global_policy().name.encode())
    return digest.hexdigest()[:16]


def shard_paths(cache_dir, files):
    """The cache shard of each source shard, in source order."""
    return [f"{cache_dir}/{source.rsplit('/', 1)[-1]}" for source in files]


def _sidecar(target):
    return f"{target}.json"


def _unique():
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def problem(target, num_records=None):
    """None when cache shard `target` is complete (its sidecar matches it), else why not;
    "missing" when there is no such shard."""
    try:
        length = tf.io.gfile.stat(target).length
    except tf.errors.NotFoundError:
        return "missing"
    except tf.errors.OpError as e:  # e.g. a path through a file: never written there
        return f"unreadable: {e.message}"
    side = read_json(_sidecar(target))
    if not isinstance(side, dict) or "num_bytes" not in side:
        return f"no readable sidecar {_sidecar(target).rsplit('/', 1)[-1]}"
    if length != side["num_bytes"]:
        return f"{length} bytes, its sidecar says {side['num_bytes']}"
    if num_records is not None and side.get("num_records") != num_records:
        return f"{side.get('num_records')} records, the source shard has {num_records}"
    return None


def complete(cache_dir, files, records_per_file=None):
    """True when every source shard of `files` has a complete cache shard in `cache_dir`."""
    counts = records_per_file or {}
    return all(problem(target, counts.get(source)) is None
               for source, target in zip(files, shard_paths(cache_dir, files)))


def choose_dir(cache_dirs, files, records_per_file=None):
    """The first of `cache_dirs` that holds a complete cache, else the first writable one
    (a warning names each one passed over). Raises OSError when none is writable."""
    for cache_dir in cache_dirs:
        if complete(cache_dir, files, records_per_file):
            return cache_dir
    reasons = []
    for index, cache_dir in enumerate(cache_dirs):
        reason = filesystems.write_problem(cache_dir)
        if reason is None:
            return cache_dir
        reasons.append(f"{cache_dir}: {reason}")
        if index + 1 < len(cache_dirs):
            logging.warning("feature cache: cannot write %s (%s); using %s instead", cache_dir,
                            reason, cache_dirs[index + 1])
    raise OSError(f"no writable feature cache directory ({'; '.join(reasons)}): set "
                  "--feature_cache_dir to a writable directory or pass --nofeature_cache")


def _features_example(feature, label):
    return serialize_example({FEATURES_KEY: bytes_feature(feature.tobytes()),
                              LABEL_KEY: int64_feature(label)})


def _shard_features(backbone, source, image_size, image_format, batch_size):
    """(features, labels) of every record of `source`: one VGG16 pass over the shard."""
    records = data.image_dataset([source], image_size, image_format, batch_size, training=False)
    features = backbone.predict(records.map(lambda images, labels: images), verbose=0)
    labels = np.concatenate([labels.numpy() for _, labels in records])
    return features, labels


# A killed build leaves its temporaries behind on a local disk (an object in a bucket appears only
# once complete). A live writer writes its temporary in one go, seconds after creating it, so
# one untouched for this long is a dead run's.
STALE_TEMPORARY_SECONDS = 3600


def remove_stale_temporaries(cache_dir, now=None):
    """Removes the temporaries (shard `.tmp-*`, sidecar `.incomplete-*`) of killed builds in
    `cache_dir`; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        leftovers = (tf.io.gfile.glob(f"{cache_dir}/*.tmp-*")
                     + tf.io.gfile.glob(f"{cache_dir}/*.incomplete-*"))
        for path in leftovers:
            try:
                if now - tf.io.gfile.stat(path).mtime_nsec / 1e9 > STALE_TEMPORARY_SECONDS:
                    tf.io.gfile.remove(path)
                    removed += 1
            except tf.errors.NotFoundError:  # renamed by its writer, removed by another run
                continue
    except tf.errors.OpError as e:  # a read-only cache: reading it is all this run needs
        logging.debug("feature cache: leftovers in %s not removed: %s", cache_dir, e)
    if removed:
        logging.info("feature cache: removed %d temporary files of killed builds in %s",
                     removed, cache_dir)
    return removed


def _write_shard(target, features, labels):
    unique = _unique()
    with filesystems.atomic_write(target, f"{target}.tmp-{unique}") as tmp, \
            tf.io.TFRecordWriter(tmp) as writer:
        for feature, label in zip(features, labels):
            writer.write(_features_example(feature, label))
    write_json(_sidecar(target), {"num_records": int(len(labels)),
                                  "num_bytes": tf.io.gfile.stat(target).length},
               writer=f"-{unique}")


def build(backbone, files, cache_dir, image_size, image_format, batch_size,
          records_per_file=None):
    """Writes the cache shards that are missing or damaged; returns all cache shard paths in
    source order. `records_per_file`: source shard -> its record count (the manifest's), checked
    against each cache shard's sidecar. Logs whether the cache was reused or built, and its size.
    """
    start = time.monotonic()
    counts = records_per_file or {}
    targets = shard_paths(cache_dir, files)
    remove_stale_temporaries(cache_dir)
    built = 0
    for source, target in zip(files, targets):
        reason = problem(target, counts.get(source))
        if reason is None:
            continue
        if reason != "missing":
            logging.warning("feature cache: %s is damaged (%s): computing it again", target, reason)
        tf.io.gfile.makedirs(cache_dir)
        logging.info("feature cache: computing %s", target)
        features, labels = _shard_features(backbone, source, image_size, image_format, batch_size)
        # Another run may have finished this shard meanwhile; replacing it with the same bytes
        # is harmless, and this run's features are the ones it has.
        _write_shard(target, features, labels)
        built += 1
    megabytes = sum(tf.io.gfile.stat(target).length for target in targets) / 1e6
    if built:
        logging.info("feature cache: built %d of %d shards in %s (%.1f MB, %.1f s)", built,
                     len(targets), cache_dir, megabytes, time.monotonic() - start)
    else:
        logging.info("feature cache: reused %s (%.1f MB)", cache_dir, megabytes)
    return targets


def feature_spec(backbone):
    shape = backbone.output_shape[1:]
    return shape, tf.as_dtype(backbone.output.dtype)


def dataset(cache_files, backbone, batch_size, training, **kwargs):
    """Batches of (features, labels) shaped like the backbone's output."""
    shape, dtype = feature_spec(backbone)
    keys = {FEATURES_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, keys)
        features = tf.reshape(tf.io.decode_raw(parsed[FEATURES_KEY], dtype), [-1, *shape])
        return features, tf.cast(parsed[LABEL_KEY], tf.int32)

    return data.make_dataset(cache_files, parse, batch_size, training, **kwargs)


def size_bytes(num_records, backbone):
    shape, dtype = feature_spec(backbone)
    return int(num_records * np.prod(shape) * dtype.size)
