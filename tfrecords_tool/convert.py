r"""Converts labelled TIFF pages into sharded TFRecords.

  python -m tfrecords_tool.convert --labels=rvl-cdip/val.txt --images_dir=rvl-cdip \
      --output_dir=gs://bucket/rvl-224

Stages: labels (page list) -> split (splits, shards, tasks) -> decode (in a process pool) ->
write (one shard at a time) -> manifest (last). A killed run, rerun with the same flags, keeps
the shards already complete and ends with the same files as an uninterrupted run. Several
machines can share the work: task `--task_index` of `--num_tasks` converts every num_tasks-th
shard (both default from Google Cloud Batch, AWS Batch array or Kubernetes indexed Job
variables) and whichever task finds all shards of a split complete writes its manifest.
"""
import collections
import functools
import itertools
import os
import posixpath
import sys
import time
from typing import List, NamedTuple

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from tfrecords_tool import decode
from tfrecords_tool import encode
from tfrecords_tool import filesystems
from tfrecords_tool import labels
from tfrecords_tool import manifest
from tfrecords_tool import page_pool
from tfrecords_tool import records
from tfrecords_tool import split
from tfrecords_tool import write
from tfrecords_tool.classes import RVL_CDIP_CLASSES

FLAGS = flags.FLAGS

# (index variable, count variable) of the batch systems whose array jobs run one task per index.
_TASK_VARIABLES = (
    ("BATCH_TASK_INDEX", "BATCH_TASK_COUNT"),  # Google Cloud Batch
    ("AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE"),  # AWS Batch array job
    ("JOB_COMPLETION_INDEX", None),  # Kubernetes indexed Job
)
_PROBE_PAGES = 20
_MIN_PAGES_FOR_BAD_FRACTION = 100
_WARNINGS_SHOWN = 5  # log lines per distinct decoder warning; the manifest lists every page


class ConvertError(Exception):
    """A problem with the flags or the data that stops the conversion."""


class Shard(NamedTuple):
    split: str
    name: str
    pages: List[labels.Page]
    fingerprint: str


def resolve_task(task_index, num_tasks, environ):
    """(task_index, num_tasks) from the flags, else the batch system's variables, else (0, 1)."""
    source = "--task_index"
    if task_index is None:
        for index_variable, count_variable in _TASK_VARIABLES:
            if index_variable in environ:
                source, task_index = index_variable, int(environ[index_variable])
                if num_tasks is None and count_variable in environ:
                    num_tasks = int(environ[count_variable])
                break
    if task_index is None:
        if num_tasks not in (None, 1):
            raise ConvertError(f"--num_tasks={num_tasks} needs --task_index")
        return 0, 1
    if num_tasks is None:
        raise ConvertError(f"{source}={task_index} is set but the number of tasks is not: "
                           "pass --num_tasks")
    if task_index >= num_tasks:
        raise ConvertError(f"{source}={task_index} is not below the number of tasks, {num_tasks}")
    return task_index, num_tasks


def read_pages(labels_file, images_dir, class_names, allow_outside_paths):
    """(pages, class names) from the label file, or from class folders without one."""
    if labels_file:
        names = class_names or list(RVL_CDIP_CLASSES)
        return labels.read_labels(labels_file, len(names), allow_outside_paths), names
    return labels.discover(images_dir, class_names), class_names or list(RVL_CDIP_CLASSES)


def plan_splits(pages, val_fraction, seed, split_name):
    """{split name: pages}."""
    if val_fraction is None:
        return {split_name: pages}
    train, val = split.stratified_split(pages, val_fraction, seed)
    if not train or not val:
        raise ConvertError(f"--val_fraction={val_fraction} leaves a split of {len(pages)} pages "
                           "empty")
    return {"train": train, "val": val}


def plan_shards(splits, num_shards, seed, encoding):
    """All shards of all splits, in split then shard order (`encoding`: encode_page's settings)."""
    shards = []
    for split_name, pages in splits.items():
        count = num_shards or split.default_num_shards(len(pages))
        for index, shard_pages in enumerate(split.assign_shards(pages, count, seed)):
            shards.append(Shard(split_name, write.shard_name(split_name, index, count), shard_pages,
                                manifest.fingerprint(shard_pages, encoding)))
    return shards


def probe(pages, images_dir, max_bad_fraction):
    """Fails fast when a spread sample of the pages is missing (a wrong --images_dir)."""
    sample = [labels.full_path(images_dir, page.path)
              for page in pages[::max(1, len(pages) // _PROBE_PAGES)][:_PROBE_PAGES]]
    missing = [path for path in sample if not tf.io.gfile.exists(path)]
    if len(missing) == len(sample):
        raise ConvertError(f"none of {len(sample)} sampled pages exists (e.g. {missing[0]}): "
                           f"is --images_dir={images_dir} right?")
    if len(missing) > max_bad_fraction * len(sample):
        raise ConvertError(f"{len(missing)} of {len(sample)} sampled pages do not exist (e.g. "
                           f"{missing[0]}), more than --max_bad_fraction={max_bad_fraction}")


class Progress:
    """Counts converted pages, enforces --max_bad_fraction and prints a progress line."""

    def __init__(self, total, max_bad_fraction):
        self.total, self.max_bad_fraction = total, max_bad_fraction
        self.done = self.skipped = 0
        self.warned = collections.Counter()
        self.start = self.printed = time.monotonic()
        # A terminal gets one line rewritten every second; a log file a new line every 10 s.
        self.interactive = sys.stderr.isatty()
        self.interval = 1 if self.interactive else 10

    def rate(self):
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def track(self, results):
        """Passes `results` through, counting them."""
        for page, converted in results:
            self.done += 1
            self.skipped += converted.example is None
            if (self.done >= min(_MIN_PAGES_FOR_BAD_FRACTION, self.total)
                    and self.skipped > self.max_bad_fraction * self.done):
                raise ConvertError(
                    f"{self.skipped} of {self.done} pages could not be read, more than "
                    f"--max_bad_fraction={self.max_bad_fraction} (last: {page.path}: "
                    f"{converted.skip_reason})")
            self.log_decoder_messages(page, converted)
            if time.monotonic() - self.printed >= self.interval:
                self.show()
            yield page, converted

    def log_decoder_messages(self, page, converted):
        for message in converted.warnings:
            self.warned[message] += 1
            if self.warned[message] <= _WARNINGS_SHOWN:
                more = (" (further pages with this warning: in the manifest only)"
                        if self.warned[message] == _WARNINGS_SHOWN else "")
                logging.warning("%s: decoder warning: %s%s", page.path, message, more)
        if converted.errors:
            logging.warning("%s: kept despite decoder errors (--keep_decoder_errors): %s",
                            page.path, "; ".join(converted.errors))

    def show(self):
        self.printed = time.monotonic()
        rate = self.rate()
        eta = int((self.total - self.done) / rate) if rate else 0
        line = (f"{self.done}/{self.total} pages ({100 * self.done / self.total:.1f}%), "
                f"{self.skipped} skipped, {rate:.1f} pages/s, ETA {eta // 60}m{eta % 60:02d}s")
        sys.stderr.write(f"\r{line}\033[K" if self.interactive else line + "\n")
        sys.stderr.flush()


def convert_shards(shards, output_dir, images_dir, num_classes, max_bad_fraction, encode_page,
                   pool):
    """Writes `shards` (and their parts); returns the Progress with the counts.

    Pages go through `encode_page` in `pool`'s workers, or in this process without a pool."""
    jobs = [(labels.full_path(images_dir, page.path), page.label, page.path)
            for shard in shards for page in shard.pages]
    # One stream over all shards: workers run ahead of the writer across shard boundaries.
    if pool:
        results = (converted or encode.Converted(None, failure)
                   for converted, failure in pool.imap(jobs))
    else:
        results = map(encode_page, jobs)
    progress = Progress(len(jobs), max_bad_fraction)
    for shard in shards:
        shard_results = progress.track(zip(shard.pages, itertools.islice(results,
                                                                          len(shard.pages))))
        result = write.write_shard(posixpath.join(output_dir, shard.name + ".tfrecord"),
                                   shard_results, num_classes)
        manifest.save_part(output_dir, shard.name, result, shard.fingerprint)
    if progress.interactive:
        progress.show()
        sys.stderr.write("\n")
    return progress


def convert(output_dir, images_dir, labels_file=None, num_shards=None, image_size=224,
            image_format="raw", val_fraction=None, seed=0, split_name=None, task_index=0,
            num_tasks=1, merge_only=False, max_bad_fraction=0.1, allow_outside_paths=False,
            class_names=None, max_page_megapixels=decode.DEFAULT_MAX_PAGE_MEGAPIXELS,
            keep_decoder_errors=False, workers=0, page_timeout=60.0,
            jpeg_quality=records.DEFAULT_JPEG_QUALITY):
    """Converts this task's shards, then writes the manifest of every split that is complete.

    `workers` processes decode the pages (page_pool.PagePool: a crash costs one page, not the
    run); 0 decodes them in this process. Returns the paths of the manifests written.
    """
    if split_name and val_fraction is not None:
        raise ConvertError("--split names the one split; --val_fraction makes `train` and `val`")
    filesystems.register(output_dir, images_dir, labels_file)
    encoding = {"image_size": image_size, "image_format": image_format,
                "jpeg_quality": jpeg_quality if image_format == "jpeg" else None,
                "max_page_megapixels": float(max_page_megapixels),
                "keep_decoder_errors": keep_decoder_errors}
    encode_page = functools.partial(encode.encode_page, **encoding)
    # Workers are forked before TensorFlow touches any file system (reading s3:// starts
    # threads a forked child must not inherit) and after the bucket file systems are registered.
    pool = (page_pool.PagePool(encode_page, workers, page_timeout)
            if workers and not merge_only else None)
    try:
        return _convert(output_dir, images_dir, labels_file, num_shards, val_fraction, seed,
                        split_name, task_index, num_tasks, merge_only, max_bad_fraction,
                        allow_outside_paths, class_names, encoding, encode_page, pool)
    finally:
        if pool:
            pool.close()


def _convert(output_dir, images_dir, labels_file, num_shards, val_fraction, seed, split_name,
             task_index, num_tasks, merge_only, max_bad_fraction, allow_outside_paths,
             class_names, encoding, encode_page, pool):
    """convert() once its page pool runs (the pool is started before any file is read)."""
    pages, class_names = read_pages(labels_file, images_dir, class_names, allow_outside_paths)
    if split_name is None:
        source = labels_file or images_dir.rstrip("/")
        split_name = posixpath.splitext(posixpath.basename(source))[0]
    splits = plan_splits(pages, val_fraction, seed, split_name)
    shards = plan_shards(splits, num_shards, seed, encoding)
    tf.io.gfile.makedirs(output_dir)
    if not merge_only:
        mine = split.for_task(shards, task_index, num_tasks)
        todo = [shard for shard in mine
                if manifest.load_part(output_dir, shard.name, shard.fingerprint) is None]
        if len(todo) < len(mine):
            logging.info("%d of this task's %d shards are already complete",
                         len(mine) - len(todo), len(mine))
        if todo:
            probe([page for shard in todo for page in shard.pages], images_dir, max_bad_fraction)
            for name in {shard.split for shard in todo}:
                if tf.io.gfile.exists(manifest.manifest_path(output_dir, name)):
                    tf.io.gfile.remove(manifest.manifest_path(output_dir, name))  # now out of date
            progress = convert_shards(todo, output_dir, images_dir, len(class_names),
                                      max_bad_fraction, encode_page, pool)
            elapsed = time.monotonic() - progress.start
            logging.info("converted %d pages into %d shards in %.1f s (%.1f pages/s): "
                         "%d records, %d skipped", progress.done, len(todo), elapsed,
                         progress.rate(), progress.done - progress.skipped, progress.skipped)
    written = []
    for name in splits:
        split_shards = [shard for shard in shards if shard.split == name]
        parts = [manifest.load_part(output_dir, shard.name, shard.fingerprint)
                 for shard in split_shards]
        missing = [shard.name for shard, part in zip(split_shards, parts) if part is None]
        if missing:
            message = (f"split {name}: {len(missing)} of {len(parts)} shards are not complete: "
                       f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
            if merge_only:
                raise ConvertError(message)
            logging.info("%s; the task that completes them writes the manifest", message)
            continue
        settings = {"split": name, "class_names": class_names,
                    "image_size": encoding["image_size"],
                    "image_format": encoding["image_format"],
                    "jpeg_quality": encoding["jpeg_quality"], "labels": labels_file, "seed": seed,
                    "val_fraction": val_fraction}
        path = manifest.manifest_path(output_dir, name)
        manifest.write_json(path, manifest.merge(parts, settings), writer=f"-task{task_index}")
        logging.info("wrote %s", path)
        written.append(path)
    return written


def define_flags():
    """Defines the CLI's flags: only when run as a program, so importing defines none."""
    flags.DEFINE_string("labels", None, "Label file: official `path label` lines or CSV with a "
                        "`path,label` header. Omitted: each subfolder of --images_dir is a class.")
    flags.DEFINE_string("images_dir", None, "Directory the label paths are relative to.")
    flags.DEFINE_string("output_dir", None, "Directory for shards and manifests "
                        "(local, gs://, s3://).")
    flags.DEFINE_integer("num_shards", None, "Shards per split; default one per 2,000 pages.",
                         lower_bound=1)
    flags.DEFINE_integer("image_size", 224, "Pages are resized to image_size x image_size.",
                         lower_bound=1)
    flags.DEFINE_enum("image_format", "raw", records.IMAGE_FORMATS, "How pixels are stored: raw "
                      "uint8 under image/raw (fastest to train from), png (lossless) or jpeg "
                      "(smallest, lossy) under image/encoded (README: record schema).")
    flags.DEFINE_integer("jpeg_quality", records.DEFAULT_JPEG_QUALITY, "JPEG quality of "
                         "--image_format=jpeg.", lower_bound=1, upper_bound=100)
    flags.DEFINE_integer("workers", os.cpu_count(), "Decoding processes. A worker that dies "
                         "(a decoder crash, the OOM killer) is replaced at once; the page it "
                         "held is retried once, then skipped as `decoder crashed (signal N)`.",
                         lower_bound=1)
    flags.DEFINE_float("page_timeout", 60, "Seconds one page may take to decode before its "
                       "worker is killed and the page skipped.", lower_bound=0.1)
    flags.DEFINE_float("max_page_megapixels", decode.DEFAULT_MAX_PAGE_MEGAPIXELS,
                       "Pages larger than this are skipped unread. Bounds a worker's memory: the "
                       "decoded samples + 1 byte per pixel (at 256: 0.5 GB for 8-bit gray, 1 GB "
                       "for 8-bit RGB).", lower_bound=1)
    flags.DEFINE_bool("keep_decoder_errors", False, "Keep pages whose decoder reported errors "
                      "(libtiff: a half-decodable page), listing them under "
                      "`kept_with_decoder_errors` in the manifest, instead of skipping them.")
    flags.DEFINE_float("val_fraction", None, "Split the pages, stratified by class, into "
                       "`train` and `val` with this fraction in `val`.", lower_bound=0,
                       upper_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the train/val split and of the shuffle into shards.")
    flags.DEFINE_string("split", None, "Split name; default: the label file's name without "
                        "extension (the images directory's name without --labels).")
    flags.DEFINE_integer("task_index", None, "This task's index (default: BATCH_TASK_INDEX, "
                         "AWS_BATCH_JOB_ARRAY_INDEX or JOB_COMPLETION_INDEX, else 0).",
                         lower_bound=0)
    flags.DEFINE_integer("num_tasks", None, "Number of tasks (default: BATCH_TASK_COUNT or "
                         "AWS_BATCH_JOB_ARRAY_SIZE, else 1).", lower_bound=1)
    flags.DEFINE_bool("merge_only", False, "Convert nothing; write the manifests of the splits "
                      "whose shards are all complete.")
    flags.DEFINE_float("max_bad_fraction", 0.1, "Stop when more than this fraction of the pages "
                       "cannot be read.", lower_bound=0, upper_bound=1)
    flags.DEFINE_bool("allow_outside_paths", False, "Accept absolute label paths and paths with "
                      "`..` that leave --images_dir.")
    flags.DEFINE_list("class_names", None, "Class names in id order, for data sets other than "
                      "RVL-CDIP; without --labels, the class folder names.")
    flags.mark_flags_as_required(["images_dir", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        task_index, num_tasks = resolve_task(FLAGS.task_index, FLAGS.num_tasks, os.environ)
        # Even one worker is a separate process: a decoder crash must not end the conversion.
        convert(FLAGS.output_dir, FLAGS.images_dir, FLAGS.labels, FLAGS.num_shards,
                FLAGS.image_size, FLAGS.image_format, FLAGS.val_fraction, FLAGS.seed,
                FLAGS.split, task_index, num_tasks, FLAGS.merge_only, FLAGS.max_bad_fraction,
                FLAGS.allow_outside_paths, FLAGS.class_names, FLAGS.max_page_megapixels,
                FLAGS.keep_decoder_errors, FLAGS.workers, FLAGS.page_timeout, FLAGS.jpeg_quality)
    except (ConvertError, labels.LabelFileError, page_pool.WorkersKeepDying) as e:
        sys.exit(f"convert: error: {e}")
    except tf.errors.OpError as e:
        sys.exit(f"convert: error: {e.message}")


if __name__ == "__main__":
    define_flags()
    filesystems.run(main)
