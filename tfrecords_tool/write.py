"""Stage 5: one TFRecord shard, which appears under its final name only once complete."""
from absl import logging
import tensorflow as tf

from tfrecords_tool import filesystems


def shard_name(split, index, num_shards):
    """`{split}-{index:05d}-of-{num_shards:05d}`, the stem of a shard's files."""
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def write_shard(path, results, num_classes):
    """Writes the converted pages of `results` to the TFRecord file `path`.

    `results` yields (page, encode.Converted). The file is written as `path.incomplete` and renamed
    when complete, so an interrupted run never leaves a partial file under the final name.
    Returns the shard's num_records, class_counts, skipped pages (path, reason), and the pages
    written with decoder warnings or (kept) decoder errors (path, messages).
    """
    class_counts = [0] * num_classes
    listed = {"skipped": [], "decoder_warnings": [], "kept_with_decoder_errors": []}
    with filesystems.atomic_write(path) as temporary, tf.io.TFRecordWriter(temporary) as writer:
        for page, converted in results:
            if converted.example is None:
                logging.warning("skipped %s: %s", page.path, converted.skip_reason)
                listed["skipped"].append({"path": page.path, "reason": converted.skip_reason})
                continue
            writer.write(converted.example)
            class_counts[page.label] += 1
            for key, messages in (("decoder_warnings", converted.warnings),
                                  ("kept_with_decoder_errors", converted.errors)):
                if messages:
                    listed[key].append({"path": page.path, "messages": list(messages)})
    return {"num_records": sum(class_counts), "class_counts": class_counts, **listed}
