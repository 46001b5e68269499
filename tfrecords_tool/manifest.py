"""Stage 6: what a converted split holds, in `{split}-manifest.json`, written last.

Each shard's result is kept beside it in `{shard}.json` (a per-shard partial manifest, written
after the shard's rename): it carries a fingerprint of the shard's pages and settings and the
shard's byte size, so a rerun keeps only shards that are complete and current. The manifest is
merged from the parts of all shards, whether one task or many wrote them, and holds no timing
fields: every way of producing a split gives the same manifest bytes.
"""
import hashlib
import json
import posixpath

import tensorflow as tf

import tfrecords_tool
from tfrecords_tool import filesystems


def write_json(path, value, writer=""):
    """Writes `value` to `path` through a temporary file, so readers never see half of it.

    Writers that may race for the same `path` pass distinct `writer` ids.
    """
    with filesystems.atomic_write(path, f"{path}.incomplete{writer}") as temporary:
        with tf.io.gfile.GFile(temporary, "w") as f:
            f.write(json.dumps(value, indent=1) + "\n")


def read_json(path):
    """The JSON value in `path`, or None when there is no such (complete) file."""
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    except (tf.errors.NotFoundError, json.JSONDecodeError):
        return None


def manifest_path(output_dir, split):
    return posixpath.join(output_dir, f"{split}-manifest.json")


def fingerprint(pages, encoding):
    """Identifies what a shard's bytes depend on: its pages, in order, and the encoding
    settings (a dict of JSON values)."""
    content = [tfrecords_tool.__version__, sorted(encoding.items()),
               [list(page) for page in pages]]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def save_part(output_dir, name, result, shard_fingerprint):
    """Records the result of the shard `name` (already in place) in `{name}.json`."""
    file = name + ".tfrecord"
    num_bytes = tf.io.gfile.stat(posixpath.join(output_dir, file)).length
    write_json(posixpath.join(output_dir, name + ".json"),
               {"file": file, "num_bytes": num_bytes, "fingerprint": shard_fingerprint, **result})


def load_part(output_dir, name, shard_fingerprint):
    """The stored result of shard `name` if its file is complete and current, else None."""
    part = read_json(posixpath.join(output_dir, name + ".json"))
    if part is None or part["fingerprint"] != shard_fingerprint:
        return None
    try:
        num_bytes = tf.io.gfile.stat(posixpath.join(output_dir, part["file"])).length
    except tf.errors.NotFoundError:
        return None
    return part if num_bytes == part["num_bytes"] else None


def merge(parts, settings):
    """The manifest of a split from the parts of all its shards, in shard order."""
    class_counts = [sum(counts) for counts in zip(*(part["class_counts"] for part in parts))]
    return {
        "split": settings["split"],
        "num_records": sum(class_counts),
        "class_counts": class_counts,
        "class_names": settings["class_names"],
        "image_size": settings["image_size"],
        "image_format": settings["image_format"],
        "jpeg_quality": settings["jpeg_quality"],
        "shards": [{"file": part["file"], "num_records": part["num_records"]} for part in parts],
        **{key: [entry for part in parts for entry in part[key]]
           for key in ("skipped", "kept_with_decoder_errors", "decoder_warnings")},
        "labels": settings["labels"],
        "skipped_label_lines": settings["skipped_label_lines"],
        "seed": settings["seed"],
        "val_fraction": settings["val_fraction"],
        "converter_version": tfrecords_tool.__version__,
    }
