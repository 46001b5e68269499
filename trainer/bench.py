r"""Throughput benchmark: the reference TIFF loader vs the converter and the trainer's pipeline.

    python -m trainer.bench --output=bench.json

In one run, on the same generated TIFF pages (tfrecords_tool.sample, in a temporary work
directory), it measures and writes to --output (JSON), and prints as a table:

- seed_loader_img_s: the reference notebook's input, keras ImageDataGenerator(rescale=1/255)
  .flow_from_dataframe(...) over the TIFF files (224x224, rgb, batch 32, categorical), images/s
  of one full pass (len(gen) batches).
- page_stages (gray_page_ms, resize_ms, resize_ms_bilinear): milliseconds per page of the
  converter's decode (tfrecords_tool.decode.gray_page) and resize, next to plain bilinear, box
  and the reference's nearest-neighbour resize, with their mean difference to plain bilinear.
- convert_img_s_1 / convert_img_s_all / convert_scaling: pages/s of the converter (the
  tfrecords_tool.convert.convert() that `python -m tfrecords_tool.convert` runs, in a helper
  process) with 1 worker (in-process) and with all cores (page workers forked by convert(), as
  the CLI does; their start-up is included); interpreter start-up is excluded.
  convert_img_s_png / convert_img_s_jpeg: the same with --image_format=png / jpeg (the
  converter's default --jpeg_quality).
- pipeline_img_s (raw records), pipeline_img_s_png, pipeline_img_s_jpeg and
  pipeline_img_s_augment: images/s that `trainer.data.image_dataset(..., training=True)`, called
  as trainer/main.py calls it, delivers in steady state (after --warmup_batches, over
  --timed_batches), no model attached; bytes_per_record_{raw,png,jpeg}.
- jpeg_drift: per --jpeg_qualities, bytes per page and the pixel error against the converter's
  pixels (the raw records) after tf.io.decode_jpeg, and the decode time per page.
- augment_cpu_img_s: the `strong` augmentation layer itself on this CPU (what augmenting on the
  host would cost; the trainer runs it inside the model, on the accelerator).
- cached_epoch_speedup: model1 (weights none) epoch time over image records (VGG16 forward every
  step) / epoch time of the head on trainer.feature_cache's features, both after a warm-up epoch.
- training (--train_models; by default model1 and model3 when a GPU is visible, none on a CPU):
  images/s of model.fit steps (weights none, at --image_size, --train_batch_size) fed by the
  trainer's pipeline and by one batch held in memory; when the pipeline's rate is below 95% of
  the in-memory one, training is input-bound. With nvidia-smi, the mean GPU utilisation of the
  timed epochs. Precision and strategy come from trainer.distribute's flags (--precision=auto:
  mixed_float16 on GPUs), as in trainer.main.
- the machine (cores, CPU model, TF version, GPUs, load average, a check of how many cores this
  process can actually get in parallel) and every setting used.

Every throughput is the best of --repeats (conversions: --convert_repeats) measurements, all
samples are in the JSON too: on a shared machine other processes only ever make a measurement
slower. The figures are what was measured on this machine at this time; nothing is extrapolated.
"""
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import app, flags

from tfrecords_tool import sample
from trainer import distribute

FLAGS = flags.FLAGS
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ENCODED_FORMATS = ("png", "jpeg")

# Targets of the throughput issue (checked and reported, never asserted).
TARGET_CONVERT_SCALING = 1.7        # convert_img_s_all / convert_img_s_1 on 2 cores
TARGET_CONVERT_VS_SEED = 1.5        # convert_img_s_all / seed_loader_img_s
TARGET_PIPELINE_VS_SEED = 30.0      # pipeline_img_s / seed_loader_img_s
TARGET_PIPELINE_PER_CORE = 5000.0   # pipeline_img_s per CPU core, at image size 224
TARGET_CACHED_SPEEDUP = 10.0        # uncached / cached epoch time

NOTES = {
    "throughput": "every img/s figure is the best of --repeats measurements (all samples are "
                  "recorded next to it): on a shared machine other processes only slow one down",
    "convert": "pages / seconds of tfrecords_tool.convert.convert() (label file to manifest), "
               "the function `python -m tfrecords_tool.convert` runs, in a helper process; 1 "
               "worker decodes in-process, more are page workers forked by convert() (their "
               "start-up included); interpreter start-up excluded; best of --convert_repeats or more "
               "alternating runs (more, within --convert_budget_s, while the fastest multi-worker "
               "run got under 90% of its cores); each run records the cores it got",
    "pipeline_img_s_augment": "with --augment=light/strong trainer.main builds the host pipeline "
                              "with the same data.image_dataset call (the feature cache is off); "
                              "augmentation runs inside the model, on the accelerator, so this is "
                              "a second measurement of the same pipeline",
    "augment_cpu_img_s": "the augmentation layer alone (training=True, in a tf.function) on this "
                         "machine's CPU: what augmenting on the host would cost",
    "cached_epoch_speedup": "fastest timed epoch of model.fit over image records (VGG16 forward "
                            "every step) / fastest timed epoch of head.fit over the feature cache; "
                            "the cache is built once (cached_epochs.cache_build_s)",
}


def define_flags():
    """The benchmark's flags: defined only when run as a program, so importing defines none."""
    flags.DEFINE_string("output", "bench.json", "JSON file for the results.")
    flags.DEFINE_string("work_dir", None, "Parent of the temporary work directory (default: the "
                        "system's temporary directory).")
    flags.DEFINE_bool("keep_work_dir", False, "Keep the generated pages and records.")
    flags.DEFINE_integer("pages_per_class", 80, "Generated TIFF pages per class (16 classes).",
                         lower_bound=1)
    flags.DEFINE_integer("max_side", 1000, "Longest side of the generated pages (RVL-CDIP: 1000).",
                         lower_bound=32)
    flags.DEFINE_integer("seed", 0, "Seed of the sample pages, shuffles and model weights.")
    flags.DEFINE_integer("image_size", 224, "Image size of the reference loader, the converter and "
                         "the pipeline.", lower_bound=8)
    flags.DEFINE_integer("seed_batch_size", 32, "Batch size of the reference loader.", lower_bound=1)
    flags.DEFINE_integer("stage_pages", 256, "Pages timed stage by stage (decode, resize filters).",
                         lower_bound=1)
    flags.DEFINE_integer("workers", os.cpu_count(), "Converter workers of the 'all cores' run.",
                         lower_bound=1)
    flags.DEFINE_integer("batch_size", 256, "Batch size of the pipeline measurements.", lower_bound=1)
    flags.DEFINE_integer("shuffle_buffer", 4096, "Shuffle buffer (trainer.main's default).",
                         lower_bound=0)
    flags.DEFINE_integer("record_copies", 8, "The pipeline reads this many copies (hard links) of "
                         "the converted shards, like a data set of many shards.", lower_bound=1)
    flags.DEFINE_integer("warmup_batches", 24, "Pipeline batches skipped before timing (the "
                         "shuffle buffer fills).", lower_bound=0)
    flags.DEFINE_integer("timed_batches", 60, "Pipeline batches timed per measurement.",
                         lower_bound=1)
    flags.DEFINE_integer("convert_repeats", 5, "Conversions with 1 and with --workers workers "
                         "(alternating); the fastest of each counts.", lower_bound=1)
    flags.DEFINE_float("convert_budget_s", 30.0, "After --convert_repeats pairs, more pairs are "
                       "run while the fastest --workers run got under 90% of its cores (other "
                       "processes held them) and these seconds, counted from the first "
                       "conversion, are not spent.", lower_bound=0)
    flags.DEFINE_integer("png_timed_batches", 20, "Batches timed per png and jpeg pipeline "
                         "measurement (they decode ~10x slower than raw).", lower_bound=1)
    flags.DEFINE_list("jpeg_qualities", ["75", "85", "90", "95"], "JPEG qualities of jpeg_drift.")
    flags.DEFINE_integer("repeats", 3, "Measurements of each throughput; the best is reported.",
                         lower_bound=1)
    flags.DEFINE_enum("augment_level", "strong", ["light", "strong"],
                      "Augmentation level of augment_cpu_img_s.")
    flags.DEFINE_integer("augment_batch_size", 32, "Batch size of augment_cpu_img_s.", lower_bound=1)
    flags.DEFINE_integer("augment_batches", 10, "Batches timed per augment_cpu_img_s measurement.",
                         lower_bound=1)
    flags.DEFINE_enum("cache_model", "model1", ["model1", "model2"], "Model of the cached-epoch "
                      "measurement.")
    flags.DEFINE_integer("cache_image_size", 128, "Image size of the cached-epoch measurement "
                         "(model1 needs >= 128).", lower_bound=32)
    flags.DEFINE_integer("cache_records", 256, "Pages converted for the cached-epoch measurement.",
                         lower_bound=1)
    flags.DEFINE_integer("timed_epochs", 2, "Epochs timed (after one warm-up epoch) for each of the "
                         "uncached and cached fits; the fastest counts.", lower_bound=1)
    flags.DEFINE_list("train_models", None, "Models whose training steps are timed (default: "
                      "model1,model3 when a GPU is visible, none on a CPU, where a VGG16 step at "
                      "224 px takes seconds).")
    flags.DEFINE_integer("train_batch_size", 256, "Global batch size of the training measurement.",
                         lower_bound=1)
    flags.DEFINE_integer("train_steps", 20, "Steps per timed training epoch (after one warm-up "
                         "epoch of as many steps).", lower_bound=1)
    flags.DEFINE_integer("cache_batch_size", 32, "Batch size of the cached-epoch measurement "
                         "(trainer.main's default).", lower_bound=1)


_STAGES = {}  # stage name -> seconds, filled by log()
_CURRENT = []


def log(message, stage=None):
    """Prints a progress line; with `stage`, the time until the next stage is recorded under it."""
    now = time.perf_counter()
    if _CURRENT:
        name, start = _CURRENT.pop()
        _STAGES[name] = round(_STAGES.get(name, 0.0) + now - start, 2)
    if stage:
        _CURRENT.append((stage, now))
    if message:
        sys.stderr.write(f"[bench] {message}\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_SPIN = ("import time\nt = time.perf_counter()\ns = 0\nfor i in range({n}):\n    s += i * i\n"
         "print(time.perf_counter() - t)")


def parallel_capacity(processes, n=3_000_000):
    """Cores this benchmark can get right now: `processes` copies of a pure-Python loop run at
    once, each timed against the same loop run alone (2.0 on an idle 2-core machine)."""
    def run(count):
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN.format(n=n)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(count)]
        return [float(p.communicate()[0]) for p in procs]
    alone = min(run(1)[0] for _ in range(2))
    together = run(processes)
    return round(sum(alone / t for t in together), 2)


def machine_info():
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "cpu_cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "gpus": [gpu.name for gpu in gpus],
        "gpu": bool(gpus),
    }


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

def seed_loader(csv_path, images_dir, image_size, batch_size, repeats):
    """Images/s of the reference notebook's loader, one full pass per measurement."""
    import pandas as pd
    from tf_keras.src.preprocessing import image as keras_image

    note = None
    if not hasattr(keras_image, "scipy"):
        # ImageDataGenerator.apply_transform checks `scipy is None` before every image, although
        # an identity transform (no augmentation, as here) never calls SciPy; without SciPy that
        # check is a NameError. A placeholder lets the loader run doing exactly its normal work.
        keras_image.scipy = types.SimpleNamespace()
        note = "scipy not installed: placeholder module set (identity transforms never use it)"
    frame = pd.read_csv(csv_path)
    frame["label"] = frame["label"].astype(str)
    generator = keras.preprocessing.image.ImageDataGenerator(rescale=1.0 / 255).flow_from_dataframe(
        frame, directory=images_dir, x_col="path", y_col="label", target_size=(image_size, image_size),
        batch_size=batch_size, class_mode="categorical")
    samples, cpu_samples = [], []
    for _ in range(repeats):
        start, cpu, images = time.perf_counter(), time.process_time(), 0
        for index in range(len(generator)):
            x, _ = generator[index]
            images += len(x)
        samples.append(images / (time.perf_counter() - start))
        cpu_samples.append(images / max(time.process_time() - cpu, 1e-9))
    return {"img_s": max(samples), "samples": samples, "img_per_cpu_s": cpu_samples,
            "images_per_pass": images,
            "batches_per_pass": len(generator), "batch_shape": list(x.shape), "dtype": str(x.dtype),
            "note": note}


def page_stages(labels_txt, images_dir, image_size, pages, repeats):
    """Milliseconds per page of the converter's two stages (tfrecords_tool.decode: gray_page on
    the file bytes, then resize) and of the other resize filters it was chosen among."""
    from PIL import Image
    import tifffile
    from tfrecords_tool import decode

    with open(labels_txt) as f:
        paths = [os.path.join(images_dir, line.split()[0]) for line in f if line.strip()][:pages]
    files = []
    for path in paths:
        with open(path, "rb") as f:
            files.append(f.read())
    grays = [decode.gray_page(data)[0] for data in files]
    size = (image_size, image_size)
    filters = {
        "converter": lambda gray: decode.resize(gray, image_size),
        "bilinear": lambda gray: np.asarray(gray.resize(size, Image.BILINEAR)),
        "box": lambda gray: np.asarray(gray.resize(size, Image.BOX)),
        "nearest_reference": lambda gray: np.asarray(gray.resize(size, Image.NEAREST)),
    }

    def best_ms(function, items):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for item in items:
                function(item)
            times.append(time.perf_counter() - start)
        return 1000 * min(times) / len(items)

    def pillow_alone(data):
        return Image.open(io.BytesIO(data)).convert("L")

    def tifffile_alone(data):
        return tifffile.imread(io.BytesIO(data))

    # tifffile reads no CCITT (Group 4) pages: the decoder comparison uses the others.
    not_fax = [data for data, gray in zip(files, grays)
               if Image.open(io.BytesIO(data)).mode != "1"]
    bilinear = [filters["bilinear"](gray) for gray in grays]
    return {
        "pages": len(files), "image_size": image_size, "reducing_gap": decode.REDUCING_GAP,
        "gray_page_ms": best_ms(decode.gray_page, files),
        # Pillow alone on the same pages: gray_page_ms minus this is the converter's own cost
        # per page (reading the layout, capturing decoder messages).
        "pillow_alone_ms": best_ms(pillow_alone, files),
        "decoders_not_fax_ms": {"pages": len(not_fax), "pillow": best_ms(pillow_alone, not_fax),
                                "tifffile": best_ms(tifffile_alone, not_fax)},
        "resize_ms": {name: best_ms(function, grays) for name, function in filters.items()},
        "mean_abs_diff_to_bilinear": {
            name: float(np.mean([np.abs(function(gray).astype(int) - want).mean()
                                 for gray, want in zip(grays, bilinear)]))
            for name, function in filters.items() if name != "bilinear"},
    }


# A helper process that runs tfrecords_tool.convert.convert() -- what `python -m
# tfrecords_tool.convert` runs -- on request, with its page workers (forked in milliseconds) or,
# for 1 worker, in-process. Interpreter start-up happens once, so each conversion is timed alone
# and the benchmark can afford several of them (best of --repeats).
_DRIVER = r"""
import json, os, resource, shutil, sys, time
from tfrecords_tool import convert
print(json.dumps({"ready": os.getpid()}), flush=True)

def cpu_seconds():
    # user + system CPU time of this process and of its finished children (the page workers)
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

for line in sys.stdin:
    job = json.loads(line)
    if os.path.exists(job["output_dir"]):
        shutil.rmtree(job["output_dir"])  # the converter keeps complete shards: start from nothing
    cpu, start = cpu_seconds(), time.perf_counter()
    convert.convert(job["output_dir"], job["images_dir"], job["labels"], image_size=job["image_size"],
                    image_format=job["image_format"], split_name=job["split"],
                    workers=job["workers"] if job["workers"] > 1 else 0)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cpu_s": cpu_seconds() - cpu}), flush=True)
"""


class Converter:
    """The converter in a helper process: 1 worker (in-process) or `workers` processes."""

    def __init__(self, workers, log_path):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-c", _DRIVER], env=env,
                                        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        self._reply()

    def _reply(self):
        line = self.process.stdout.readline()
        if not line:
            self.log.flush()
            with open(self.log.name) as f:
                raise RuntimeError(f"the converter helper stopped:\n{f.read()[-3000:]}")
        return json.loads(line)

    def run(self, labels_file, images_dir, output_dir, workers, image_size, image_format,
            split="train"):
        """Converts; returns pages/s (pages read / seconds of convert()) and the manifest's counts."""
        job = {"labels": labels_file, "images_dir": images_dir, "output_dir": output_dir,
               "workers": workers, "image_size": image_size, "image_format": image_format,
               "split": split}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        seconds, cpu_s = reply["seconds"], reply["cpu_s"]
        from trainer import data
        manifest = data.read_manifest(output_dir, split)
        pages = manifest["num_records"] + len(manifest["skipped"])
        return {"pages": pages, "records": manifest["num_records"],
                "skipped": len(manifest["skipped"]), "shards": len(manifest["shards"]),
                "seconds": seconds, "img_s": pages / seconds, "workers": workers,
                "image_size": image_size, "image_format": image_format,
                "jpeg_quality": manifest["jpeg_quality"],
                # CPU time of the converter and its workers: how many cores it actually got
                "cpu_s": cpu_s, "cores_used": cpu_s / seconds if cpu_s else None,
                "img_per_cpu_s": pages / cpu_s if cpu_s else None}

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def best_conversion(runs):
    return max(runs, key=lambda run: run["img_s"])


def replicate_shards(files, directory, copies, split="train"):
    """Hard links (else copies) of `files`, `copies` times, named as the converter names shards."""
    os.makedirs(directory, exist_ok=True)
    total = len(files) * copies
    out = []
    for index in range(total):
        target = os.path.join(directory, f"{split}-{index:05d}-of-{total:05d}.tfrecord")
        source = files[index % len(files)]
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        out.append(target)
    return out


def pipeline(files, image_size, image_format, batch_size, shuffle_buffer, seed, warmup, timed,
             repeats):
    """Images/s of trainer.data.image_dataset as trainer.main builds it for training."""
    from trainer import data

    # trainer.main.train(): data.image_dataset(files, image_size, manifest["image_format"],
    # FLAGS.batch_size, training=True, seed=FLAGS.seed, deterministic=FLAGS.deterministic,
    # shuffle_buffer=FLAGS.shuffle_buffer, num_workers=num_workers) -- one worker here.
    dataset = data.image_dataset(files, image_size, image_format, batch_size, training=True,
                                 seed=seed, deterministic=False, shuffle_buffer=shuffle_buffer,
                                 num_workers=1)
    iterator = iter(dataset)
    start = time.perf_counter()
    for _ in range(warmup):
        images, _ = next(iterator)
    warmup_s = time.perf_counter() - start
    samples, cpu_samples = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(timed):
            images, labels = next(iterator)
        elapsed = time.perf_counter() - start
        samples.append(timed * batch_size / elapsed)
        cpu_samples.append(timed * batch_size / max(time.process_time() - cpu, 1e-9))
    del iterator
    return {"img_s": max(samples), "samples": samples, "img_per_cpu_s": cpu_samples,
            "warmup_s": round(warmup_s, 3), "batch_shape": list(images.shape),
            "dtype": images.dtype.name, "files": len(files)}


def jpeg_drift(raw_files, image_size, qualities, pages, repeats):
    """Per JPEG quality: bytes per page, pixel error to the converter's pixels after
    tf.io.decode_jpeg (mean, max, 99th percentile), and decode milliseconds per page."""
    from tfrecords_tool import records

    batch = next(iter(tf.data.TFRecordDataset(raw_files).batch(pages)))
    parsed = tf.io.parse_example(batch, records.FEATURES)
    originals = records.decode_images(parsed[records.RAW_KEY], "raw", image_size).numpy()[..., 0]
    out = {"pages": len(originals)}
    for quality in map(int, qualities):
        encoded = [records.encode_pixels(page, "jpeg", quality) for page in originals]
        decoded = [tf.io.decode_jpeg(data, channels=1).numpy()[..., 0] for data in encoded]
        error = np.abs(np.stack(decoded).astype(np.int16) - originals)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for data in encoded:
                tf.io.decode_jpeg(data, channels=1)
            times.append(time.perf_counter() - start)
        out[str(quality)] = {"bytes": float(np.mean([len(data) for data in encoded])),
                             "mean_abs_error": float(error.mean()), "max_abs_error": int(error.max()),
                             "p99_abs_error": float(np.percentile(error, 99)),
                             "decode_ms": 1000 * min(times) / len(encoded)}
    return out


def augment_cpu(files, image_size, image_format, level, batch_size, batches, repeats, seed):
    """Images/s of the augmentation layer itself on this machine's CPU (training=True)."""
    from trainer import augment, data

    images, _ = next(iter(data.image_dataset(files[:1], image_size, image_format, batch_size,
                                             training=False)))
    if images.shape[0] < batch_size:  # fewer records than one batch: repeat them
        images = tf.tile(images, [math.ceil(batch_size / images.shape[0]), 1, 1, 1])[:batch_size]
    layer = augment.augmentation(level, seed)

    @tf.function  # a def, not a lambda: AutoGraph cannot find a lambda's source among several
    def apply(x):
        return layer(x, training=True)

    apply(images).numpy()  # trace and warm up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            apply(images).numpy()
        samples.append(batches * batch_size / (time.perf_counter() - start))
    return {"img_s": max(samples), "samples": samples, "level": level, "batch_size": batch_size,
            "batches": batches, "input_shape": list(images.shape)}


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def _compiled_model(strategy, model_name, image_size, num_classes, seed):
    """As trainer.main.build() + compile_() with their defaults: random VGG16 weights, Adam 1e-3
    (model3's fine-tuned VGG16 layers: Adam 1e-5)."""
    from trainer import models

    with strategy.scope():
        model = models.build_model(model_name, image_size, num_classes, "none", "none", seed)
        backbone_optimizer = keras.optimizers.Adam(1e-5) if model_name == "model3" else None
        models.compile_model(model, keras.optimizers.Adam(1e-3), backbone_optimizer)
    return model


def cached_epochs(data_dir, model_name, batch_size, shuffle_buffer, seed, timed_epochs, cache_dir,
                  strategy):
    """(uncached epoch time, cached epoch time, details) as trainer.main trains models 1/2."""
    from trainer import data, feature_cache, models

    keras.utils.set_random_seed(seed)
    manifest = data.read_manifest(data_dir, "train")
    image_size, image_format = manifest["image_size"], manifest["image_format"]
    files = data.shard_files(data_dir, "train")
    steps = max(1, manifest["num_records"] // batch_size)
    model = _compiled_model(strategy, model_name, image_size, len(manifest["class_names"]), seed)

    def images(training):
        return data.image_dataset(files, image_size, image_format, batch_size, training=training,
                                  seed=seed, deterministic=False, shuffle_buffer=shuffle_buffer,
                                  num_workers=1)

    uncached = EpochTimes()
    model.fit(images(True), epochs=1 + timed_epochs, steps_per_epoch=steps, callbacks=[uncached],
              verbose=0)

    # trainer.main.cached_training()
    with strategy.scope():
        backbone, head = models.split_backbone_head(model)
        models.compile_model(head, keras.optimizers.Adam(1e-3))
    start = time.perf_counter()
    cache_files = feature_cache.build(
        backbone, files, f"{cache_dir}/train-{feature_cache.cache_key(manifest, backbone)}",
        image_size, image_format, batch_size)
    build_s = time.perf_counter() - start
    cached_dataset = feature_cache.dataset(cache_files, backbone, batch_size, True, seed=seed,
                                           deterministic=False, shuffle_buffer=shuffle_buffer)
    cached = EpochTimes()
    head.fit(cached_dataset, epochs=1 + timed_epochs, steps_per_epoch=steps, callbacks=[cached],
             verbose=0)
    uncached_s, cached_s = min(uncached.times[1:]), min(cached.times[1:])
    return uncached_s, cached_s, {
        "model": model_name, "weights": "none", "image_size": image_size, "image_format": image_format,
        "records": manifest["num_records"], "batch_size": batch_size, "steps_per_epoch": steps,
        "uncached_epoch_s": [round(t, 4) for t in uncached.times],
        "cached_epoch_s": [round(t, 4) for t in cached.times],
        "cache_build_s": round(build_s, 3),
        "cache_bytes": feature_cache.size_bytes(manifest["num_records"], backbone),
        "note": "first epoch of each is the warm-up (tracing, shuffle buffer); the speedup uses the "
                "fastest later epoch of each; fit() with only a timing callback",
    }


class GpuUtilization(keras.callbacks.Callback):
    """Mean utilisation (%) over all GPUs that `nvidia-smi` reports every 200 ms during the epochs
    after the first (warm-up) one; `mean` stays None without nvidia-smi."""

    def __init__(self):
        super().__init__()
        self.mean, self._sampler = None, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1 and shutil.which("nvidia-smi"):
            self._sampler = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def on_train_end(self, logs=None):
        if self._sampler is None:
            return
        self._sampler.terminate()
        samples = [float(value) for line in self._sampler.communicate()[0].splitlines()
                   for value in line.split(",") if value.strip()]
        self.mean = sum(samples) / len(samples) if samples else None


def training_steps(files, image_size, image_format, model_name, batch_size, steps, repeats,
                   shuffle_buffer, seed, strategy):
    """Images/s of model.fit steps fed by the trainer's pipeline and by one batch held in memory."""
    from trainer import data

    keras.utils.set_random_seed(seed)
    model = _compiled_model(strategy, model_name, image_size, 16, seed)
    pipeline = data.image_dataset(files, image_size, image_format, batch_size, training=True,
                                  seed=seed, deterministic=False, shuffle_buffer=shuffle_buffer,
                                  num_workers=1)
    in_memory = tf.data.Dataset.from_tensors(next(iter(pipeline))).repeat()
    result = {"model": model_name, "image_size": image_size, "batch_size": batch_size,
              "steps_per_epoch": steps, "policy": keras.mixed_precision.global_policy().name,
              "replicas": strategy.num_replicas_in_sync}
    for name, dataset in (("in_memory", in_memory), ("pipeline", pipeline)):
        timer, utilization = EpochTimes(), GpuUtilization()
        model.fit(dataset, epochs=1 + repeats, steps_per_epoch=steps,
                  callbacks=[timer, utilization], verbose=0)
        result[f"img_s_{name}"] = steps * batch_size / min(timer.times[1:])
        result[f"epoch_s_{name}"] = [round(t, 4) for t in timer.times]
        result[f"gpu_utilization_{name}"] = utilization.mean
    result["pipeline_vs_in_memory"] = result["img_s_pipeline"] / result["img_s_in_memory"]
    result["input_bound"] = result["pipeline_vs_in_memory"] < 0.95
    return result


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def _subset_labels(labels_txt, path, count):
    with open(labels_txt) as f:
        lines = [line for line in f if line.strip()][:count]
    with open(path, "w") as f:
        f.writelines(lines)
    return len(lines)


def _record_bytes(files, num_records):
    return round(sum(os.path.getsize(f) for f in files) / max(num_records, 1), 1)


def _target(value, target, unit=""):
    return {"value": value, "target": target, "met": bool(value >= target),
            "margin": round(value / target, 3), "unit": unit}


def run(settings, work, strategy):
    """All measurements; returns the result dict (JSON-ready)."""
    cores = os.cpu_count()
    result = {"machine": machine_info(), "settings": settings}
    result["machine"].update(policy=keras.mixed_precision.global_policy().name,
                             replicas=strategy.num_replicas_in_sync)
    result["machine"]["loadavg_before"] = list(os.getloadavg())

    log(f"generating {16 * settings['pages_per_class']} TIFF pages in {work}", stage="generate")
    start = time.perf_counter()
    info = sample.generate(os.path.join(work, "sample"), settings["pages_per_class"],
                           seed=settings["seed"], max_side=settings["max_side"])
    result["sample"] = {"pages": info["num_pages"], "max_side": settings["max_side"],
                        "encodings": info["encoding_counts"],
                        "generate_s": round(time.perf_counter() - start, 2)}
    size, repeats = settings["image_size"], settings["repeats"]

    log("reference loader (ImageDataGenerator.flow_from_dataframe)", stage="seed_loader")
    seed = seed_loader(info["labels_csv"], info["images_dir"], size, settings["seed_batch_size"],
                       repeats)
    result["seed_loader"] = seed
    result["seed_loader_img_s"] = seed["img_s"]

    log("converter stages per page (decode, resize filters)", stage="page_stages")
    stages = page_stages(info["labels_txt"], info["images_dir"], size, settings["stage_pages"],
                         repeats)
    result["page_stages"] = stages
    result["resize_ms"] = stages["resize_ms"]["converter"]
    result["resize_ms_bilinear"] = stages["resize_ms"]["bilinear"]

    log(f"checking parallel capacity ({cores} processes)", stage="parallel_capacity")
    result["machine"]["parallel_capacity"] = parallel_capacity(cores)
    log("converter: starting the helper process", stage="convert_start")
    workers = settings["workers"]
    converter = Converter(workers, os.path.join(work, "converter.log"))
    raw_dir = os.path.join(work, "raw-all")
    encoded_dirs = {name: os.path.join(work, name) for name in ENCODED_FORMATS}
    cache_labels = os.path.join(work, "cache-labels.txt")
    cache_data = os.path.join(work, "cache-data")
    try:
        log(f"converter: --workers=1 and --workers={workers}", stage="convert_raw")
        runs = {"1": [], "all": []}
        deadline = time.perf_counter() + settings["convert_budget_s"]
        while True:  # pairs of runs, alternating: a busy moment hits both settings
            for name, count in (("1", 1), ("all", workers)):
                runs[name].append(converter.run(info["labels_txt"], info["images_dir"],
                                                os.path.join(work, f"raw-{name}"), count, size, "raw"))
            if len(runs["1"]) < settings["convert_repeats"]:
                continue
            # On a shared machine other processes may hold cores during every run so far; then
            # the scaling measured is theirs, not the converter's. Go on while time is left.
            got = best_conversion(runs["all"])["cores_used"]
            if got is None or got >= 0.9 * workers or time.perf_counter() > deadline:
                break
        encoded = {}
        for name, directory in encoded_dirs.items():
            log(f"converter: --image_format={name}", stage=f"convert_{name}")
            encoded[name] = converter.run(info["labels_txt"], info["images_dir"], directory,
                                          workers, size, name)
        log("converter: records for the cached-epoch measurement", stage="convert_cache")
        _subset_labels(info["labels_txt"], cache_labels, settings["cache_records"])
        cache_conversion = converter.run(cache_labels, info["images_dir"], cache_data, workers,
                                         settings["cache_image_size"], "raw")
    finally:
        converter.close()
    one, full = best_conversion(runs["1"]), best_conversion(runs["all"])
    result["convert"] = {"workers_1": runs["1"], "workers_all": runs["all"], **encoded,
                         "cache_records": cache_conversion}
    result["convert_img_s_1"] = one["img_s"]
    result["convert_img_s_all"] = full["img_s"]
    result["convert_scaling"] = full["img_s"] / one["img_s"]
    result["convert_vs_seed"] = full["img_s"] / seed["img_s"]
    for name, conversion in encoded.items():
        result[f"convert_img_s_{name}"] = conversion["img_s"]
    result["convert_cores_used"] = {"1": one["cores_used"], "all": full["cores_used"]}

    from trainer import data
    raw_files = data.shard_files(raw_dir, "train")
    encoded_files = {name: data.shard_files(directory, "train")
                     for name, directory in encoded_dirs.items()}
    result["bytes_per_record_raw"] = _record_bytes(raw_files, full["records"])
    for name, files in encoded_files.items():
        result[f"bytes_per_record_{name}"] = _record_bytes(files, encoded[name]["records"])

    copies = settings["record_copies"]
    common = dict(batch_size=settings["batch_size"], shuffle_buffer=settings["shuffle_buffer"],
                  seed=settings["seed"], warmup=settings["warmup_batches"],
                  timed=settings["timed_batches"], repeats=repeats)
    log("pipeline: raw records", stage="pipeline_raw")
    raw_copies = replicate_shards(raw_files, os.path.join(work, "pipeline-raw"), copies)
    result["pipeline"] = {"raw": pipeline(raw_copies, size, "raw", **common)}
    for name, files in encoded_files.items():
        log(f"pipeline: {name} records", stage=f"pipeline_{name}")
        copied = replicate_shards(files, os.path.join(work, f"pipeline-{name}"), copies)
        result["pipeline"][name] = pipeline(copied, size, name,
                                            **dict(common, timed=settings["png_timed_batches"]))
        result[f"pipeline_img_s_{name}"] = result["pipeline"][name]["img_s"]
    log("jpeg: size and pixel error by quality", stage="jpeg_drift")
    result["jpeg_drift"] = jpeg_drift(raw_files, size, settings["jpeg_qualities"],
                                      settings["stage_pages"], repeats)
    log("pipeline: as built with --augment (the same function)", stage="pipeline_augment")
    result["pipeline"]["augment"] = pipeline(raw_copies, size, "raw", **common)
    result["pipeline"]["augment"]["note"] = NOTES["pipeline_img_s_augment"]
    result["pipeline_img_s"] = result["pipeline"]["raw"]["img_s"]
    result["pipeline_img_s_augment"] = result["pipeline"]["augment"]["img_s"]
    result["pipeline_img_s_per_core"] = result["pipeline_img_s"] / cores
    result["pipeline_vs_seed"] = result["pipeline_img_s"] / seed["img_s"]

    log(f"augmentation layer on the CPU ({settings['augment_level']})", stage="augment_cpu")
    result["augment_cpu"] = augment_cpu(raw_files, size, "raw", settings["augment_level"],
                                        settings["augment_batch_size"], settings["augment_batches"],
                                        repeats, settings["seed"])
    result["augment_cpu_img_s"] = result["augment_cpu"]["img_s"]

    log(f"cached vs uncached epochs ({settings['cache_model']}, {settings['cache_image_size']}px)",
        stage="cached_epochs")
    uncached_s, cached_s, details = cached_epochs(
        cache_data, settings["cache_model"], settings["cache_batch_size"], settings["shuffle_buffer"],
        settings["seed"], settings["timed_epochs"], os.path.join(work, "feature_cache"), strategy)
    result["cached_epochs"] = details
    result["uncached_epoch_s"] = uncached_s
    result["cached_epoch_s"] = cached_s
    result["cached_epoch_speedup"] = uncached_s / cached_s

    result["training"] = {}
    for model_name in settings["train_models"]:
        log(f"training steps ({model_name}, batch {settings['train_batch_size']}): pipeline vs "
            "in-memory batch", stage=f"training_{model_name}")
        result["training"][model_name] = training_steps(
            raw_copies, size, "raw", model_name, settings["train_batch_size"],
            settings["train_steps"], repeats, settings["shuffle_buffer"], settings["seed"], strategy)

    log(None)
    result["stage_s"] = dict(_STAGES)
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    targets = {
        "convert_scaling": _target(result["convert_scaling"], TARGET_CONVERT_SCALING, "x"),
        "convert_img_s_all_vs_seed": _target(result["convert_vs_seed"], TARGET_CONVERT_VS_SEED, "x"),
        "pipeline_vs_seed": _target(result["pipeline_vs_seed"], TARGET_PIPELINE_VS_SEED, "x"),
        "pipeline_img_s_per_core": _target(result["pipeline_img_s_per_core"],
                                           TARGET_PIPELINE_PER_CORE, "img/s/core"),
        "cached_epoch_speedup": _target(result["cached_epoch_speedup"], TARGET_CACHED_SPEEDUP, "x"),
    }
    used = full["cores_used"]
    targets["convert_scaling"]["note"] = (
        f"the {workers}-worker conversion got {used:.2f} cores on average (CPU time / wall time)"
        if used else "CPU time of the conversion not available") + (
        f"; a parallel-capacity check just before got {result['machine']['parallel_capacity']} "
        f"of {cores} cores")
    if settings["workers"] != 2 or cores != 2:
        targets["convert_scaling"]["note"] += "; the 1.7x target is for 2 workers on 2 cores"
    if size != 224:
        targets["pipeline_img_s_per_core"]["note"] = "the target is for image size 224"
    result["targets"] = targets
    result["notes"] = NOTES
    return result


def _cores(used):
    return f" (got {used:.2f} cores)" if used else ""


def table(result):
    rows = [
        ("seed_loader_img_s", result["seed_loader_img_s"], "reference ImageDataGenerator"),
        ("gray_page_ms", result["page_stages"]["gray_page_ms"], "converter: decode to gray, per page"),
        ("resize_ms", result["resize_ms"], f"converter: resize (reducing_gap="
                                           f"{result['page_stages']['reducing_gap']}), per page"),
        ("resize_ms_bilinear", result["resize_ms_bilinear"], "plain bilinear, per page"),
        ("convert_img_s_1", result["convert_img_s_1"],
         f"converter, 1 worker{_cores(result['convert_cores_used']['1'])}"),
        ("convert_img_s_all", result["convert_img_s_all"],
         f"converter, {result['settings']['workers']} workers"
         f"{_cores(result['convert_cores_used']['all'])}"),
        ("convert_scaling", result["convert_scaling"], ""),
        ("convert_img_s_png", result["convert_img_s_png"], "converter, png"),
        ("convert_img_s_jpeg", result["convert_img_s_jpeg"], "converter, jpeg"),
        ("pipeline_img_s", result["pipeline_img_s"], "tf.data, raw records"),
        ("pipeline_img_s_png", result["pipeline_img_s_png"], "tf.data, png records"),
        ("pipeline_img_s_jpeg", result["pipeline_img_s_jpeg"], "tf.data, jpeg records"),
        ("pipeline_img_s_augment", result["pipeline_img_s_augment"], "same pipeline (--augment)"),
        ("pipeline_vs_seed", result["pipeline_vs_seed"], ""),
        ("augment_cpu_img_s", result["augment_cpu_img_s"], "strong augmentation on this CPU"),
        ("bytes_per_record_raw", result["bytes_per_record_raw"], ""),
        ("bytes_per_record_png", result["bytes_per_record_png"], ""),
        ("bytes_per_record_jpeg", result["bytes_per_record_jpeg"],
         f"quality {result['convert']['jpeg']['jpeg_quality']}"),
        ("uncached_epoch_s", result["uncached_epoch_s"], ""),
        ("cached_epoch_s", result["cached_epoch_s"], ""),
        ("cached_epoch_speedup", result["cached_epoch_speedup"], ""),
    ]
    for model_name, measured in result["training"].items():
        rows.append((f"train_img_s_{model_name}", measured["img_s_pipeline"],
                     f"fit on the pipeline; in memory {measured['img_s_in_memory']:,.1f}: input-bound "
                     f"{'yes' if measured['input_bound'] else 'no'}, {measured['policy']}"))
    lines = [f"{'metric':<24}{'value':>14}  note"]
    lines += [f"{name:<24}{value:>14,.2f}  {note}" for name, value, note in rows]
    lines.append("")
    lines.append(f"{'target':<28}{'value':>10}{'target':>10}  met")
    for name, t in result["targets"].items():
        lines.append(f"{name:<28}{t['value']:>10,.2f}{t['target']:>10,.1f}  "
                     f"{'yes' if t['met'] else 'NO'} ({t['margin']:.2f}x of target)")
    machine = result["machine"]
    lines.append("")
    lines.append(f"machine: {machine['cpu_cores']} cores ({machine['cpu_model']}), TF "
                 f"{machine['tensorflow']}, GPU: {'yes' if machine['gpu'] else 'no'}, parallel "
                 f"capacity {machine['parallel_capacity']}, load {machine['loadavg_before'][0]:.2f} "
                 f"-> {machine['loadavg_after'][0]:.2f}")
    return "\n".join(lines)


def settings_from_flags():
    names = ["pages_per_class", "max_side", "seed", "image_size", "seed_batch_size", "stage_pages",
             "workers",
             "batch_size", "shuffle_buffer", "record_copies", "warmup_batches", "timed_batches",
             "png_timed_batches", "jpeg_qualities", "repeats", "convert_repeats", "convert_budget_s",
             "augment_level", "augment_batch_size",
             "augment_batches", "cache_model", "cache_image_size", "cache_records",
             "cache_batch_size", "timed_epochs", "train_batch_size", "train_steps", "strategy",
             "cpu_replicas", "precision"]
    settings = {name: getattr(FLAGS, name) for name in names}
    settings["train_models"] = (FLAGS.train_models if FLAGS.train_models is not None else
                                ["model1", "model3"] if tf.config.list_physical_devices("GPU") else [])
    settings.update(seed_loader="keras ImageDataGenerator(rescale=1/255).flow_from_dataframe("
                                "x_col='path', y_col='label' (str), class_mode='categorical', "
                                "color_mode='rgb', shuffle=True)",
                    pipeline="trainer.data.image_dataset(training=True, deterministic=False, "
                             "num_workers=1), no model attached",
                    throughput="best of `repeats` measurements; all samples recorded")
    return settings


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.cache_model == "model1" and FLAGS.cache_image_size < 128:
        raise app.UsageError("--cache_model=model1 needs --cache_image_size >= 128")
    from trainer import models
    for name in FLAGS.train_models or []:
        try:
            models.check_name_and_size(name, FLAGS.image_size)
        except ValueError as e:
            raise app.UsageError(f"--train_models: {e}") from e
    strategy = distribute.strategy_from_flags()  # before anything else touches the devices
    settings = settings_from_flags()
    start = time.perf_counter()
    work = tempfile.mkdtemp(prefix="bench-", dir=FLAGS.work_dir)
    try:
        result = run(settings, work, strategy)
    finally:
        if FLAGS.keep_work_dir:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["command"] = " ".join([os.path.basename(sys.executable), "-m", "trainer.bench"] + sys.argv[1:])
    with tf.io.gfile.GFile(FLAGS.output, "w") as f:
        json.dump(result, f, indent=2)
    print(table(result))
    print(f"wrote {FLAGS.output} in {result['wall_s']} s")


if __name__ == "__main__":
    define_flags()
    app.run(main)
