"""Frozen-backbone feature cache for models 1 and 2.

Those models train only the layers after a frozen VGG16, and nothing random happens before them
when augmentation is off, so the VGG16 features of each page never change. They are computed
once, one cache shard per source shard (same records, same order), into
`{model_dir}/feature_cache/{split}-{key}/`, and later epochs train the head on them. The cached
pipeline has the image pipeline's structure (same file shuffle, interleave, shuffle buffer and
seed), so with `--deterministic` both see the same batches and give the same losses.
The key hashes the split's manifest, the backbone's weights and the precision policy: a change in
any of them means new features. A cache shard is written under a temporary name and renamed, so a
killed run leaves no partial shard; the next run computes only the missing ones.
"""
import hashlib
import json

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from tfrecords_tool import filesystems
from tfrecords_tool.records import bytes_feature, int64_feature, serialize_example
from trainer import data

# The cache records' keys: the backbone's output (raw bytes) and the class id.
FEATURES_KEY = "features"
LABEL_KEY = "label"


def why_not(model_name, augment, num_workers):
    """None when the cache is exact for this run, else the reason it is off."""
    if model_name == "model3":
        return "model3 fine-tunes VGG16 layers, so its features change every step"
    if augment not in (None, "none"):
        return f"--augment={augment} changes every page every step"
    if num_workers > 1:
        return "multi-worker training reads each worker's own shards; the cache is single-worker"
    return None


def cache_key(manifest, backbone):
    digest = hashlib.sha1(json.dumps({k: manifest[k] for k in ("shards", "image_size", "num_records")},
                                     sort_keys=True).encode())
    for weight in backbone.weights:
        digest.update(weight.numpy().tobytes())
    digest.update(keras.mixed_precision.global_policy().name.encode())
    return digest.hexdigest()[:16]


def _features_example(feature, label):
    return serialize_example({FEATURES_KEY: bytes_feature(feature.tobytes()),
                              LABEL_KEY: int64_feature(label)})


def build(backbone, files, cache_dir, image_size, image_format, batch_size):
    """Writes the cache shards that are missing; returns all cache shard paths in source order."""
    tf.io.gfile.makedirs(cache_dir)
    cache_files = []
    for source in files:
        target = f"{cache_dir}/{source.rsplit('/', 1)[-1]}"
        cache_files.append(target)
        if tf.io.gfile.exists(target):
            continue
        logging.info("feature cache: computing %s", target)
        records = data.image_dataset([source], image_size, image_format, batch_size, training=False)
        features = backbone.predict(records.map(lambda images, labels: images), verbose=0)
        labels = np.concatenate([labels.numpy() for _, labels in records])
        with filesystems.atomic_write(target, f"{target}.tmp") as tmp, \
                tf.io.TFRecordWriter(tmp) as writer:
            for feature, label in zip(features, labels):
                writer.write(_features_example(feature, label))
    return cache_files


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
