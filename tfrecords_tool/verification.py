"""Checks converted shards against their manifests (the library; the CLI is verify.py).

Reads every record of every shard (TFRecord checksums verified), parses it and decodes its image,
then compares per-shard record counts, the total and the class counts with
`{split}-manifest.json` and reports shard files missing from or unknown to the manifest.
"""
import dataclasses
import posixpath
import re
from typing import List, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tfrecords_tool import cli
from tfrecords_tool import errors
from tfrecords_tool import filesystems
from tfrecords_tool import manifest
from tfrecords_tool import records

_BATCH = 256


class NoManifest(errors.ToolError):
    """There is nothing to verify."""


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """verify's settings: `python -m tfrecords_tool.verify` has one flag per field."""
    data_dir: Optional[str] = cli.setting(None, "The converter's --output_dir.")
    split: Optional[str] = cli.setting(
        None, "Split to check; default: every split with a manifest.")


class SplitResult(NamedTuple):
    split: str
    problems: List[str]  # empty: every check passed
    manifest: Optional[dict]


def shard_class_counts(path, image_size, image_format, num_classes):
    """Per-class record counts of one shard; raises on a damaged or wrongly sized record."""
    counts = np.zeros(num_classes, np.int64)
    for batch in tf.data.TFRecordDataset(path).batch(_BATCH):
        parsed = tf.io.parse_example(batch, records.FEATURES)
        sizes = set(parsed[records.HEIGHT_KEY].numpy()) | set(parsed[records.WIDTH_KEY].numpy())
        if sizes != {image_size}:
            raise ValueError(f"image sides {sorted(sizes)}, manifest says {image_size}")
        formats = {value.decode() for value in parsed[records.FORMAT_KEY].numpy()}
        if formats != {image_format}:
            raise ValueError(f"image formats {sorted(formats)}, manifest says {image_format}")
        records.decode_images(parsed[records.pixel_key(image_format)], image_format, image_size)
        labels = parsed[records.LABEL_KEY].numpy()
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels outside 0..{num_classes - 1}")
        counts += np.bincount(labels, minlength=num_classes)
    return counts


def verify_split(data_dir, split):
    """(problems, manifest) of one split; no problems means every check passed."""
    split_manifest = manifest.read_json(manifest.manifest_path(data_dir, split))
    if split_manifest is None:
        return [f"no readable {split}-manifest.json"], None
    num_classes = len(split_manifest["class_names"])
    listed = [shard["file"] for shard in split_manifest["shards"]]
    pattern = posixpath.join(data_dir, f"{split}-?????-of-?????.tfrecord")
    present = {posixpath.basename(path) for path in tf.io.gfile.glob(pattern)}
    problems = [f"{file}: missing" for file in listed if file not in present]
    problems += [f"{file}: not in the manifest" for file in sorted(present - set(listed))]
    total = np.zeros(num_classes, np.int64)
    for shard in split_manifest["shards"]:
        if shard["file"] not in present:
            continue
        try:
            counts = shard_class_counts(posixpath.join(data_dir, shard["file"]),
                                        split_manifest["image_size"],
                                        split_manifest["image_format"], num_classes)
        except (tf.errors.OpError, ValueError) as e:
            message = e.message if isinstance(e, tf.errors.OpError) else str(e)
            # Drops TensorFlow's "{{function_node ...}}" prefix and "[Op:...]" suffix.
            message = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", message.splitlines()[0]).strip()
            problems.append(f"{shard['file']}: damaged: {message}")
            continue
        if counts.sum() != shard["num_records"]:
            problems.append(f"{shard['file']}: {counts.sum()} records, "
                            f"manifest says {shard['num_records']}")
        total += counts
    if not problems:
        if total.sum() != split_manifest["num_records"]:
            problems.append(f"{total.sum()} records in all, "
                            f"manifest says {split_manifest['num_records']}")
        for label, (found, listed_count) in enumerate(zip(total, split_manifest["class_counts"])):
            if found != listed_count:
                problems.append(f"class {label} ({split_manifest['class_names'][label]}): "
                                f"{found} records, manifest says {listed_count}")
    return problems, split_manifest


def verify(config=None, **settings):
    """A SplitResult per split checked (`config` a VerifyConfig; keywords set its fields).

    Raises NoManifest (exit 2) when the split has no manifest, or data_dir has none at all; a
    split that fails is a result with problems (the CLI exits 1: errors.SomeInputsFailed).
    """
    config = dataclasses.replace(config, **settings) if config else VerifyConfig(**settings)
    if not config.data_dir:
        raise errors.UsageError("--data_dir must be set")
    filesystems.register(config.data_dir)
    splits = [config.split] if config.split else sorted(
        posixpath.basename(path)[:-len("-manifest.json")]
        for path in tf.io.gfile.glob(posixpath.join(config.data_dir, "*-manifest.json")))
    if not splits:
        raise NoManifest(f"no *-manifest.json in {config.data_dir}")
    results = [SplitResult(split, *verify_split(config.data_dir, split)) for split in splits]
    if config.split and results[0].manifest is None:
        raise NoManifest(f"{config.split}: {results[0].problems[0]} in {config.data_dir}")
    return results
