r"""Converts labelled TIFF pages into sharded TFRecords (the library; the CLI is convert.py).

  from tfrecords_tool import conversion
  conversion.convert(labels="rvl-cdip/val.txt", images_dir="rvl-cdip",
                     output_dir="gs://bucket/rvl-224")

Stages: 1 labels (page list) -> 2 split (splits, shards, tasks) -> 3 decode and 4 records (in
a process pool, encode.py) -> 5 write (one shard at a time) -> 6 manifest (last). A killed run, rerun with the same settings, keeps
the shards already complete and ends with the same files as an uninterrupted run. Several
machines can share the work: task `task_index` of `num_tasks` converts every num_tasks-th
shard (both default from Google Cloud Batch, AWS Batch array or Kubernetes indexed Job
variables) and whichever task finds all shards of a split complete writes its manifest.
"""
import collections
import dataclasses
import functools
import itertools
import os
import posixpath
import sys
import time
from typing import List, NamedTuple, Optional

from absl import logging
import tensorflow as tf

from tfrecords_tool import cli
from tfrecords_tool import decode
from tfrecords_tool import encode
from tfrecords_tool import errors
from tfrecords_tool import filesystems
from tfrecords_tool import labels
from tfrecords_tool import manifest
from tfrecords_tool import page_pool
from tfrecords_tool import records
from tfrecords_tool import split
from tfrecords_tool import write
from tfrecords_tool.classes import RVL_CDIP_CLASSES

# (index variable, count variable) of the batch systems whose array jobs run one task per index.
_TASK_VARIABLES = (
    ("BATCH_TASK_INDEX", "BATCH_TASK_COUNT"),  # Google Cloud Batch
    ("AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE"),  # AWS Batch array job
    ("JOB_COMPLETION_INDEX", None),  # Kubernetes indexed Job
)
_PROBE_PAGES = 20
_MIN_PAGES_FOR_BAD_FRACTION = 100
_WARNINGS_SHOWN = 5  # log lines per distinct decoder warning; the manifest lists every page


class ConvertError(errors.ToolError):
    """A problem with the settings or the data that stops the conversion."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """The converter's settings: `python -m tfrecords_tool.convert` has one flag per field.

    In Python, `workers=0` decodes the pages in the calling process (no worker processes).
    """
    labels: Optional[str] = cli.setting(
        None, "Label file: official `path label` lines or CSV with a `path,label` header. "
        "Omitted: each subfolder of --images_dir is a class.")
    images_dir: Optional[str] = cli.setting(None, "Directory the label paths are relative to.")
    output_dir: Optional[str] = cli.setting(
        None, "Directory for shards and manifests (local, gs://, s3://).")
    num_shards: Optional[int] = cli.setting(
        None, "Shards per split; default one per 2,000 pages.", lower_bound=1)
    image_size: int = cli.setting(224, "Pages are resized to image_size x image_size.",
                                  lower_bound=1)
    image_format: str = cli.setting(
        "raw", "How pixels are stored: raw uint8 under image/raw (fastest to train from), png "
        "(lossless) or jpeg (smallest, lossy) under image/encoded (docs/data.md: the records).",
        choices=records.IMAGE_FORMATS)
    jpeg_quality: int = cli.setting(records.DEFAULT_JPEG_QUALITY,
                                    "JPEG quality of --image_format=jpeg.", lower_bound=1,
                                    upper_bound=100)
    workers: int = cli.setting(
        os.cpu_count(), "Decoding processes. A worker that dies (a decoder crash, the OOM "
        "killer) is replaced at once; the page it held is retried once, then skipped as "
        "`decoder crashed (signal N)`.", lower_bound=1)
    page_timeout: float = cli.setting(
        60.0, "Seconds one page may take to decode before its worker is killed and the page "
        "skipped.", lower_bound=0.1)
    max_page_megapixels: float = cli.setting(
        decode.DEFAULT_MAX_PAGE_MEGAPIXELS, "Pages larger than this are skipped unread. Bounds "
        "a worker's memory: the decoded samples + 1 byte per pixel (at 256: 0.5 GB for 8-bit "
        "gray, 1 GB for 8-bit RGB).", lower_bound=1)
    keep_decoder_errors: bool = cli.setting(
        False, "Keep pages whose decoder reported errors (libtiff: a half-decodable page), "
        "listing them under `kept_with_decoder_errors` in the manifest, instead of skipping "
        "them.")
    val_fraction: Optional[float] = cli.setting(
        None, "Split the pages, stratified by class, into `train` and `val` with this fraction "
        "in `val`.", lower_bound=0, upper_bound=1)
    seed: int = cli.setting(0, "Seed of the train/val split and of the shuffle into shards.")
    split: Optional[str] = cli.setting(
        None, "Split name; default: the label file's name without extension (the images "
        "directory's name without --labels).")
    task_index: Optional[int] = cli.setting(
        None, "This task's index (default: BATCH_TASK_INDEX, AWS_BATCH_JOB_ARRAY_INDEX or "
        "JOB_COMPLETION_INDEX, else 0).", lower_bound=0)
    num_tasks: Optional[int] = cli.setting(
        None, "Number of tasks (default: BATCH_TASK_COUNT or AWS_BATCH_JOB_ARRAY_SIZE, else 1).",
        lower_bound=1)
    merge_only: bool = cli.setting(
        False, "Convert nothing; write the manifests of the splits whose shards are all "
        "complete.")
    max_bad_fraction: float = cli.setting(
        0.1, "Stop when more than this fraction of the pages cannot be read, or of the label "
        "file's lines are malformed (each bad line is skipped with a warning).", lower_bound=0,
        upper_bound=1)
    allow_outside_paths: bool = cli.setting(
        False, "Accept absolute label paths and paths with `..` that leave --images_dir.")
    class_names: Optional[List[str]] = cli.setting(
        None, "Class names in id order, for data sets other than RVL-CDIP; without --labels, "
        "the class folder names.")

    def encoding(self):
        """The settings a shard's bytes depend on (encode.encode_page's keyword arguments)."""
        return {"image_size": self.image_size, "image_format": self.image_format,
                "jpeg_quality": self.jpeg_quality if self.image_format == "jpeg" else None,
                "max_page_megapixels": float(self.max_page_megapixels),
                "keep_decoder_errors": self.keep_decoder_errors}


class Shard(NamedTuple):
    split: str
    name: str
    pages: List[labels.Page]
    fingerprint: str


def resolve_task(task_index, num_tasks, environ):
    """(task_index, num_tasks) from the settings, else the batch system's variables in
    `environ`, else (0, 1)."""
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


def read_pages(config):
    """(pages, class names, skipped label lines) from the label file, or from class folders
    without one."""
    names = config.class_names or list(RVL_CDIP_CLASSES)
    if config.labels:
        listed = labels.read_labels(config.labels, len(names), config.allow_outside_paths,
                                    config.max_bad_fraction)
        return listed.pages, names, listed.bad_lines
    return labels.discover(config.images_dir, config.class_names), names, []


def split_name(config):
    """The one split's name: --split, else the label file's (or images directory's) stem."""
    if config.split:
        return config.split
    source = config.labels or config.images_dir.rstrip("/")
    return posixpath.splitext(posixpath.basename(source))[0]


def plan_splits(pages, config):
    """{split name: pages}."""
    if config.val_fraction is None:
        return {split_name(config): pages}
    train, val = split.stratified_split(pages, config.val_fraction, config.seed)
    if not train or not val:
        raise ConvertError(f"--val_fraction={config.val_fraction} leaves a split of {len(pages)} "
                           "pages empty")
    return {"train": train, "val": val}


def plan_shards(splits, config):
    """All shards of all splits, in split then shard order."""
    shards = []
    for name, pages in splits.items():
        count = config.num_shards or split.default_num_shards(len(pages))
        for index, shard_pages in enumerate(split.assign_shards(pages, count, config.seed)):
            shards.append(Shard(name, write.shard_name(name, index, count), shard_pages,
                                manifest.fingerprint(shard_pages, config.encoding())))
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


def convert_shards(shards, config, num_classes, encode_pages):
    """Writes `shards` (and their parts); returns the Progress with the counts.

    `encode_pages` maps the jobs (path, label, filename) to encode.Converted, in order."""
    jobs = [(labels.full_path(config.images_dir, page.path), page.label, page.path)
            for shard in shards for page in shard.pages]
    # One stream over all shards: workers run ahead of the writer across shard boundaries.
    results = encode_pages(jobs)
    progress = Progress(len(jobs), config.max_bad_fraction)
    for shard in shards:
        shard_results = progress.track(zip(shard.pages, itertools.islice(results,
                                                                          len(shard.pages))))
        result = write.write_shard(posixpath.join(config.output_dir, shard.name + ".tfrecord"),
                                   shard_results, num_classes)
        manifest.save_part(config.output_dir, shard.name, result, shard.fingerprint)
    if progress.interactive:
        progress.show()
        sys.stderr.write("\n")
    return progress


def _make_config(config, settings):
    config = dataclasses.replace(config, **settings) if config else ConvertConfig(**settings)
    missing = [name for name in ("images_dir", "output_dir") if not getattr(config, name)]
    if missing:
        raise errors.UsageError(f"{' and '.join('--' + name for name in missing)} must be set")
    if config.split and config.val_fraction is not None:
        raise ConvertError("--split names the one split; --val_fraction makes `train` and `val`")
    return config


def convert(config=None, **settings):
    """Converts this task's shards, then writes the manifest of every split that is complete.

    `config` is a ConvertConfig; keyword arguments set (or override) its fields:
    `convert(labels="l.txt", images_dir="imgs", output_dir="out", image_size=64)`.
    `workers` processes decode the pages (page_pool.PagePool: a crash costs one page, not the
    run); 0 decodes them in this process. task_index/num_tasks left unset come from the batch
    system's variables in os.environ (resolve_task). Returns the paths of the manifests written.
    Raises ConvertError, labels.LabelFileError or page_pool.WorkersKeepDying (all
    errors.ToolError) on a problem that stops the conversion.
    """
    config = _make_config(config, settings)
    task = resolve_task(config.task_index, config.num_tasks, os.environ)
    filesystems.register(config.output_dir, config.images_dir, config.labels)
    encode_page = functools.partial(encode.encode_page, **config.encoding())
    # Workers are forked before TensorFlow touches any file system (reading s3:// starts
    # threads a forked child must not inherit) and after the bucket file systems are registered.
    pool = (page_pool.PagePool(encode_page, config.workers, config.page_timeout)
            if config.workers and not config.merge_only else None)
    try:
        if pool:
            def encode_pages(jobs):
                return (converted or encode.Converted(None, failure)
                        for converted, failure in pool.imap(jobs))
        else:
            def encode_pages(jobs):
                return map(encode_page, jobs)
        return _convert(config, task, encode_pages)
    finally:
        if pool:
            pool.close()


def _convert(config, task, encode_pages):
    """convert() once its page pool runs (the pool is started before any file is read)."""
    pages, class_names, bad_lines = read_pages(config)
    splits = plan_splits(pages, config)
    shards = plan_shards(splits, config)
    tf.io.gfile.makedirs(config.output_dir)
    if not config.merge_only:
        _convert_task(shards, config, task, len(class_names), encode_pages)
    return _write_manifests(splits, shards, class_names, bad_lines, config, task[0])


def _convert_task(shards, config, task, num_classes, encode_pages):
    """Converts the shards of task (index, count) that are not complete yet."""
    mine = split.for_task(shards, *task)
    todo = [shard for shard in mine
            if manifest.load_part(config.output_dir, shard.name, shard.fingerprint) is None]
    if len(todo) < len(mine):
        logging.info("%d of this task's %d shards are already complete",
                     len(mine) - len(todo), len(mine))
    if not todo:
        return
    probe([page for shard in todo for page in shard.pages], config.images_dir,
          config.max_bad_fraction)
    for name in {shard.split for shard in todo}:
        path = manifest.manifest_path(config.output_dir, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)  # now out of date
    progress = convert_shards(todo, config, num_classes, encode_pages)
    elapsed = time.monotonic() - progress.start
    logging.info("converted %d pages into %d shards in %.1f s (%.1f pages/s): "
                 "%d records, %d skipped", progress.done, len(todo), elapsed,
                 progress.rate(), progress.done - progress.skipped, progress.skipped)


def _write_manifests(splits, shards, class_names, bad_lines, config, task_index):
    """Writes the manifest of every split whose shards are all complete; returns their paths."""
    written = []
    for name in splits:
        split_shards = [shard for shard in shards if shard.split == name]
        parts = [manifest.load_part(config.output_dir, shard.name, shard.fingerprint)
                 for shard in split_shards]
        missing = [shard.name for shard, part in zip(split_shards, parts) if part is None]
        if missing:
            message = (f"split {name}: {len(missing)} of {len(parts)} shards are not complete: "
                       f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
            if config.merge_only:
                raise ConvertError(message)
            logging.info("%s; the task that completes them writes the manifest", message)
            continue
        encoding = config.encoding()
        settings = {"split": name, "class_names": class_names,
                    "image_size": encoding["image_size"],
                    "image_format": encoding["image_format"],
                    "jpeg_quality": encoding["jpeg_quality"], "labels": config.labels,
                    "seed": config.seed, "val_fraction": config.val_fraction,
                    "skipped_label_lines": [line._asdict() for line in bad_lines]}
        path = manifest.manifest_path(config.output_dir, name)
        manifest.write_json(path, manifest.merge(parts, settings), writer=f"-task{task_index}")
        logging.info("wrote %s", path)
        written.append(path)
    return written
