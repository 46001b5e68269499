"""The trainer's input pipeline (trainer.data) without a model, jpeg records' pixel drift, and
the augmentation layer alone on this machine's CPU."""
import math
import os
import shutil
import time

import numpy as np
import tensorflow as tf


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
    """Images/s of trainer.data.image_dataset as trainer.training builds it for training (one
    worker, deterministic off), after `warmup` batches, over `timed` batches per measurement."""
    from trainer import data

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
