"""Stage 4: one TFRecord shard, which appears under its final name only once complete."""
from absl import logging
import tensorflow as tf


def shard_name(split, index, num_shards):
    """`{split}-{index:05d}-of-{num_shards:05d}`, the stem of a shard's files."""
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def write_shard(path, results, num_classes):
    """Writes the converted pages of `results` to the TFRecord file `path`.

    `results` yields (page, serialized Example or None, skip reason or None). The file is written
    as `path.incomplete` and renamed when complete, so an interrupted run never leaves a partial
    file under the final name. Returns the shard's num_records, class_counts and skipped pages.
    """
    temporary = path + ".incomplete"
    class_counts, skipped = [0] * num_classes, []
    try:
        with tf.io.TFRecordWriter(temporary) as writer:
            for page, example, reason in results:
                if example is None:
                    logging.warning("skipped %s: %s", page.path, reason)
                    skipped.append({"path": page.path, "reason": reason})
                    continue
                writer.write(example)
                class_counts[page.label] += 1
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise
    return {"num_records": sum(class_counts), "class_counts": class_counts, "skipped": skipped}
