"""Input pipeline: TFRecord shards -> batches of (uint8 images [B,S,S,1], int32 labels).

The host only reads and parses: shuffled file list -> parallel interleave of TFRecord readers ->
shuffle buffer -> batch -> vectorised parse -> prefetch. Casting, channel tiling and VGG16
preprocessing happen inside the model, on the accelerator.
"""
import tensorflow as tf

from tfrecords_tool import errors
from tfrecords_tool import filesystems
from tfrecords_tool.manifest import manifest_path, read_json
from tfrecords_tool.records import parse_batch


class DataError(errors.ToolError):
    """The data directory does not hold what the trainer needs."""


def read_manifest(data_dir, split):
    """The converter's `{split}-manifest.json`."""
    filesystems.register(data_dir)
    path = manifest_path(data_dir, split)
    manifest = read_json(path)
    if manifest is None:
        raise DataError(f"no manifest {path}: convert the '{split}' split with tfrecords_tool.convert first")
    return manifest


def shard_files(data_dir, split):
    """The split's shards as its manifest lists them (never stale shards of an older conversion)."""
    files = [f"{data_dir}/{shard['file']}" for shard in read_manifest(data_dir, split)["shards"]
             if shard["num_records"]]
    if not files:
        raise DataError(f"{data_dir}/{split}-manifest.json lists no shard with records")
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
        raise DataError(f"{len(missing)} shard(s) of {data_dir}/{split}-manifest.json are missing "
                        f"(first: {missing[0]}); run tfrecords_tool.verify --data_dir={data_dir}")
    return files


def find_damaged_shard(files, offset=None):
    """The first of `files` whose TFRecord framing or checksums are damaged, else None.

    offset: from the reader's "corrupted record at N"; files of at most N bytes are skipped.
    Reads the candidates in full (inside TensorFlow, not record by record in Python).
    """
    for path in files:
        if offset is not None and tf.io.gfile.stat(path).length <= offset:
            continue
        try:
            tf.data.TFRecordDataset(path, buffer_size=8 << 20).reduce(
                tf.constant(0, tf.int64), lambda count, _: count + 1).numpy()
        except tf.errors.DataLossError:
            return path
    return None


def make_dataset(files, parse_fn, batch_size, training, seed=None, deterministic=False,
                 shuffle_buffer=4096, num_workers=1):
    """A batched dataset over the TFRecord `files`; `parse_fn` maps a batch of serialized records.

    Training: infinite, shuffled (files and records), batches of exactly `batch_size`.
    Evaluation: one pass in file order, last batch may be smaller.
    `num_workers` chooses tf.data's auto-shard policy: FILE when every worker gets at least one
    file, DATA otherwise.
    """
    deterministic = deterministic or not training
    filenames = tf.data.Dataset.from_tensor_slices(files)
    if training:
        filenames = filenames.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    records = filenames.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
        cycle_length=min(len(files), 16), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if training and shuffle_buffer > 1:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = records.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(parse_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)

    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE if len(files) >= num_workers
        else tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


def image_dataset(files, image_size, image_format, batch_size, training, **kwargs):
    """Batches of (uint8 images [B,S,S,1], int32 labels) from the converter's shards."""
    return make_dataset(files, lambda s: parse_batch(s, image_format, image_size), batch_size,
                        training, **kwargs)
