"""One benchmark run: every stage in order on the same generated pages -> the result dict that
`python -m trainer.bench` writes as bench.json (keys: docs/benchmarks.md).

    from trainer.benchmarks.config import BenchConfig
    from trainer.benchmarks import run
    result = run.bench(BenchConfig(pages_per_class=20, repeats=1))
"""
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

import tensorflow as tf
import tf_keras as keras

from tfrecords_tool import conversion, errors, sample
from trainer import data, distribute, models
from trainer.benchmarks import (assignment, converter_stages, load_stages, loop_stages, machine,
                                pipeline_stages, reference, targets, training_stages)

ENCODED_FORMATS = ("png", "jpeg")
STAGES = ("inputs", "training", "loop", "load", "assignment")
DOCS = "docs/benchmarks.md"
# Keys whose reading needs more than their name: their section of DOCS.
NOTES = ("throughput", "convert", "pipeline_img_s_augment", "augment_cpu_img_s",
         "cached_epoch_speedup", "loop_overhead_cached", "loop_overhead_model2",
         "assignment_speedup", "model_load_speedup")


class Stages:
    """Progress lines on stderr; with `stage`, the time until the next stage is recorded under
    it (`seconds`)."""

    def __init__(self):
        self.seconds, self._current = {}, None

    def log(self, message, stage=None):
        now = time.perf_counter()
        if self._current:
            name, start = self._current
            self.seconds[name] = round(self.seconds.get(name, 0.0) + now - start, 2)
        self._current = (stage, now) if stage else None
        if message:
            sys.stderr.write(f"[bench] {message}\n")
            sys.stderr.flush()


def check(config):
    """Raises errors.UsageError for settings that cannot run, before any work."""
    unknown = set(config.stages) - set(STAGES)
    if unknown:
        raise errors.UsageError(f"stages: unknown {', '.join(sorted(unknown))} (expected some "
                                f"of {', '.join(STAGES)})")
    if config.cache_model == "model1" and config.cache_image_size < 128:
        raise errors.UsageError("cache_model=model1 needs cache_image_size >= 128")
    for name in config.train_models or []:
        try:
            models.check_name_and_size(name, config.image_size)
        except ValueError as e:
            raise errors.UsageError(f"train_models: {e}") from e


def bench(config, stages=None):
    """Checks `config`, then runs every stage in a temporary work directory (removed unless
    keep_work_dir) under config.precision; returns the result dict (JSON-ready).

    Builds the strategy from config.strategy / cpu_replicas: call it before anything else in
    the process touches TensorFlow's devices. Raises errors.UsageError for wrong settings."""
    check(config)
    strategy = distribute.make_strategy(config.strategy, config.cpu_replicas)
    if config.train_models is None:
        config = dataclasses.replace(config, train_models=(
            ["model1", "model3"] if tf.config.list_physical_devices("GPU") else []))
    stages = stages or Stages()
    start = time.perf_counter()
    work = tempfile.mkdtemp(prefix="bench-", dir=config.work_dir)
    try:
        with distribute.precision_policy(config.precision):
            result = run(config, work, strategy, stages)
    finally:
        if config.keep_work_dir:
            stages.log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def write(result, path):
    """bench.json (any tf.io.gfile path)."""
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(result, f, indent=2)


def run(config, work, strategy, stages):
    """The measurements of config.stages in `work`; returns the result dict."""
    result = {"machine": machine.machine_info(), "settings": dataclasses.asdict(config)}
    result["machine"].update(policy=keras.mixed_precision.global_policy().name,
                             replicas=strategy.num_replicas_in_sync)
    result["machine"]["loadavg_before"] = list(os.getloadavg())
    # The generated pages every stage but loop and load reads.
    info = _generate(config, work, stages, result) if set(config.stages) - {"loop", "load"} else None
    records = None
    if "inputs" in config.stages:
        records = _input_stages(config, work, strategy, stages, result, info)
    if "inputs" in config.stages or "training" in config.stages:
        _training_stage(config, work, strategy, stages, result, info, records)
    if "loop" in config.stages:
        _loop_stages(config, work, strategy, stages, result)
    if "load" in config.stages:
        stages.log("loading a saved model: keras.models.load_model vs the product's loader",
                   stage="load")
        result["load"] = load_stages.model_load("model2", config.image_size, config.repeats,
                                                config.seed, work)
        result["model_load_speedup"] = result["load"]["speedup"]
    if "assignment" in config.stages:
        _assignment_stage(config, work, stages, result, info)
    stages.log(None)
    result["stage_s"] = dict(stages.seconds)
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    result["targets"] = targets.check(result, targets.read())
    if "inputs" in config.stages:
        # What a target's reading depends on (docs/benchmarks.md says when it applies).
        full = converter_stages.best_conversion(result["convert"]["workers_all"])
        result["targets"].get("convert_scaling", {}).update(
            workers=config.workers, cpu_cores=os.cpu_count(), cores_used=full["cores_used"],
            parallel_capacity=result["machine"]["parallel_capacity"])
        result["targets"].get("pipeline_img_s_per_core", {}).update(image_size=config.image_size)
    result["notes"] = {name: f"{DOCS}#{name}" for name in NOTES
                       if name in result or name == "throughput"}
    return result


def _training_stage(config, work, strategy, stages, result, info, files=None):
    """training.<model>: fit steps fed by the pipeline vs by one batch in memory, on the inputs
    stage's record `files` or (the training stage alone, scripts/gpu_check.sh) on a conversion
    of its own."""
    if files is None:
        stages.log(f"converting the pages at {config.image_size}px", stage="convert_training")
        records = os.path.join(work, "training-records")
        conversion.convert(labels=info["labels_txt"], images_dir=info["images_dir"],
                           output_dir=records, image_size=config.image_size,
                           workers=config.workers, split="train", seed=config.seed)
        files = pipeline_stages.replicate_shards(
            data.shard_files(records, "train"), os.path.join(work, "training-copies"),
            config.record_copies)
    result["training"] = {}
    for model_name in config.train_models:
        stages.log(f"training steps ({model_name}, batch {config.train_batch_size}): pipeline "
                   "vs in-memory batch", stage=f"training_{model_name}")
        result["training"][model_name] = training_stages.training_steps(
            files, config.image_size, "raw", model_name, config.train_batch_size,
            config.train_steps, config.repeats, config.shuffle_buffer, config.seed, strategy,
            config.jit_compile)


def _assignment_stage(config, work, stages, result, info):
    """assignment_speedup / assignment_model3_speedup: the reference's way vs the product's."""
    stages.log(f"assignment at {config.assignment_image_size}px: ImageDataGenerator + fit vs "
               "convert + train (models 1 and 2, then model3)", stage="assignment")
    measured = assignment.assignment(
        info["labels_txt"], info["images_dir"], work, config.assignment_image_size,
        config.cache_batch_size, config.assignment_pages, config.assignment_model3_pages,
        config.seed, config.workers)
    result["assignment"] = measured
    for key in ("assignment_speedup", "assignment_model3_speedup"):
        result[key] = measured[key]


def _generate(config, work, stages, result):
    """The generated pages (result["sample"] says what) -> sample.generate's info."""
    stages.log(f"generating {16 * config.pages_per_class} TIFF pages in {work}",
               stage="generate")
    start = time.perf_counter()
    info = sample.generate(os.path.join(work, "sample"), config.pages_per_class,
                           seed=config.seed, max_side=config.max_side)
    result["sample"] = {"pages": info["num_pages"], "max_side": config.max_side,
                        "encodings": info["encoding_counts"],
                        "generate_s": round(time.perf_counter() - start, 2)}
    return info


def _loop_stages(config, work, strategy, stages, result):
    """loop_overhead_cached / loop_overhead_model2: bare fit steps/s over the product's."""
    result["loop"] = {}
    for key, model_name, size, cached, steps in (
            ("cached", "model1", 128, True, config.loop_steps_cached),
            ("model2", "model2", 64, False, config.loop_steps_model2)):
        stages.log(f"loop overhead ({model_name}{' cached head' if cached else ''}, {size}px): "
                   "bare fit vs every callback", stage=f"loop_{key}")
        result["loop"][key] = loop_stages.loop_overhead(
            model_name, size, cached, config.cache_batch_size, steps, config.loop_epochs,
            config.repeats, config.seed, work, strategy)
        result[f"loop_overhead_{key}"] = result["loop"][key]["overhead"]


def _input_stages(config, work, strategy, stages, result, info):
    """The reference loader, converter, pipeline and cached-epoch figures of the pages `info`
    into `result`; returns the raw record copies the pipeline read."""
    log = stages.log
    cores = os.cpu_count()
    size, repeats, seed = config.image_size, config.repeats, config.seed

    log("reference loader (ImageDataGenerator.flow_from_dataframe)", stage="seed_loader")
    seed_loader = reference.seed_loader(info["labels_csv"], info["images_dir"], size,
                                        config.seed_batch_size, repeats)
    result["seed_loader"] = seed_loader
    result["seed_loader_img_s"] = seed_loader["img_s"]

    log("converter stages per page (decode, resize filters)", stage="page_stages")
    page_stages = converter_stages.page_stages(info["labels_txt"], info["images_dir"], size,
                                               config.stage_pages, repeats)
    result["page_stages"] = page_stages
    result["resize_ms"] = page_stages["resize_ms"]["converter"]
    result["resize_ms_bilinear"] = page_stages["resize_ms"]["bilinear"]

    log(f"checking parallel capacity ({cores} processes)", stage="parallel_capacity")
    result["machine"]["parallel_capacity"] = machine.parallel_capacity(cores)
    _conversions(config, info, work, result, stages)

    raw_files = data.shard_files(os.path.join(work, "raw-all"), "train")
    encoded_files = {name: data.shard_files(os.path.join(work, name), "train")
                     for name in ENCODED_FORMATS}
    result["bytes_per_record_raw"] = converter_stages.record_bytes(
        raw_files, converter_stages.best_conversion(result["convert"]["workers_all"])["records"])
    for name, files in encoded_files.items():
        result[f"bytes_per_record_{name}"] = converter_stages.record_bytes(
            files, result["convert"][name]["records"])

    common = dict(batch_size=config.batch_size, shuffle_buffer=config.shuffle_buffer, seed=seed,
                  warmup=config.warmup_batches, timed=config.timed_batches, repeats=repeats)
    log("pipeline: raw records", stage="pipeline_raw")
    raw_copies = pipeline_stages.replicate_shards(raw_files, os.path.join(work, "pipeline-raw"),
                                                  config.record_copies)
    result["pipeline"] = {"raw": pipeline_stages.pipeline(raw_copies, size, "raw", **common)}
    for name, files in encoded_files.items():
        log(f"pipeline: {name} records", stage=f"pipeline_{name}")
        copied = pipeline_stages.replicate_shards(files, os.path.join(work, f"pipeline-{name}"),
                                                  config.record_copies)
        result["pipeline"][name] = pipeline_stages.pipeline(
            copied, size, name, **dict(common, timed=config.png_timed_batches))
        result[f"pipeline_img_s_{name}"] = result["pipeline"][name]["img_s"]
    log("jpeg: size and pixel error by quality", stage="jpeg_drift")
    result["jpeg_drift"] = pipeline_stages.jpeg_drift(raw_files, size, config.jpeg_qualities,
                                                      config.stage_pages, repeats)
    log("pipeline: as built with --augment (the same function)", stage="pipeline_augment")
    result["pipeline"]["augment"] = pipeline_stages.pipeline(raw_copies, size, "raw", **common)
    result["pipeline"]["augment"]["note"] = f"{DOCS}#pipeline_img_s_augment"
    result["pipeline_img_s"] = result["pipeline"]["raw"]["img_s"]
    result["pipeline_img_s_augment"] = result["pipeline"]["augment"]["img_s"]
    result["pipeline_img_s_per_core"] = result["pipeline_img_s"] / cores
    result["pipeline_vs_seed"] = result["pipeline_img_s"] / seed_loader["img_s"]

    log(f"augmentation layer on the CPU ({config.augment_level})", stage="augment_cpu")
    result["augment_cpu"] = pipeline_stages.augment_cpu(
        raw_files, size, "raw", config.augment_level, config.augment_batch_size,
        config.augment_batches, repeats, seed)
    result["augment_cpu_img_s"] = result["augment_cpu"]["img_s"]

    log(f"cached vs uncached epochs ({config.cache_model}, {config.cache_image_size}px)",
        stage="cached_epochs")
    uncached_s, cached_s, details = training_stages.cached_epochs(
        os.path.join(work, "cache-data"), config.cache_model, config.cache_batch_size,
        config.shuffle_buffer, seed, config.timed_epochs, work, strategy)
    result["cached_epochs"] = details
    result["uncached_epoch_s"] = uncached_s
    result["cached_epoch_s"] = cached_s
    result["cached_epoch_speedup"] = uncached_s / cached_s
    return raw_copies



def _conversions(config, info, work, result, stages):
    """The converter's figures (convert_*) into `result`: raw with 1 and all workers, png, jpeg,
    and the records of the cached-epoch measurement (work/cache-data)."""
    log, workers = stages.log, config.workers
    log("converter: starting the helper process", stage="convert_start")
    converter = converter_stages.Converter(os.path.join(work, "converter.log"))
    cache_labels = os.path.join(work, "cache-labels.txt")
    try:
        log(f"converter: --workers=1 and --workers={workers}", stage="convert_raw")
        runs = converter_stages.scaling_runs(
            converter, info["labels_txt"], info["images_dir"], os.path.join(work, "raw"), workers,
            config.image_size, config.convert_repeats, config.convert_budget_s)
        encoded = {}
        for name in ENCODED_FORMATS:
            log(f"converter: --image_format={name}", stage=f"convert_{name}")
            encoded[name] = converter.run(info["labels_txt"], info["images_dir"],
                                          os.path.join(work, name), workers, config.image_size,
                                          name)
        log("converter: records for the cached-epoch measurement", stage="convert_cache")
        converter_stages.subset_labels(info["labels_txt"], cache_labels, config.cache_records)
        cache_conversion = converter.run(cache_labels, info["images_dir"],
                                         os.path.join(work, "cache-data"), workers,
                                         config.cache_image_size, "raw")
    finally:
        converter.close()
    one = converter_stages.best_conversion(runs["1"])
    full = converter_stages.best_conversion(runs["all"])
    result["convert"] = {"workers_1": runs["1"], "workers_all": runs["all"], **encoded,
                         "cache_records": cache_conversion}
    result["convert_img_s_1"] = one["img_s"]
    result["convert_img_s_all"] = full["img_s"]
    result["convert_scaling"] = full["img_s"] / one["img_s"]
    result["convert_vs_seed"] = full["img_s"] / result["seed_loader_img_s"]
    for name, encoded_run in encoded.items():
        result[f"convert_img_s_{name}"] = encoded_run["img_s"]
    result["convert_cores_used"] = {"1": one["cores_used"], "all": full["cores_used"]}
