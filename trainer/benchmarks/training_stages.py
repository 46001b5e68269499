"""Model training timed: epochs over image records vs over the feature cache (models 1/2), and
training steps fed by the trainer's pipeline vs by one batch held in memory. Models are built,
compiled and split exactly as trainer.training does (its public functions)."""
import shutil
import subprocess
import time

import tensorflow as tf
import tf_keras as keras

from trainer import callbacks, data, feature_cache, models, training


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


def train_config(model_name, seed, **settings):
    """trainer.training's settings with random VGG16 weights, everything else its defaults
    (Adam 1e-3; model3's fine-tuned VGG16 layers Adam 1e-5; constant rates)."""
    return training.TrainConfig(model=model_name, weights="none", seed=seed, **settings)


def cached_epochs(data_dir, model_name, batch_size, shuffle_buffer, seed, timed_epochs, work_dir,
                  strategy):
    """(uncached epoch time, cached epoch time, details) as trainer.training trains models 1/2:
    model.fit over the image records, then the head over the feature cache
    (training.head_on_cached_features, cache under {work_dir}/feature_cache), each one warm-up
    epoch and `timed_epochs` timed ones."""
    keras.utils.set_random_seed(seed)
    manifest = data.read_manifest(data_dir, "train")
    image_size, image_format = manifest["image_size"], manifest["image_format"]
    files = data.shard_files(data_dir, "train")
    steps = max(1, manifest["num_records"] // batch_size)
    config = train_config(model_name, seed, data_dir=data_dir, model_dir=work_dir,
                          feature_cache_dir=f"{work_dir}/feature_cache",  # built here: timed
                          batch_size=batch_size, shuffle_buffer=shuffle_buffer, val_split="")
    total_steps = (1 + timed_epochs) * steps
    with strategy.scope():
        model = training.compiled_model(config, image_size, len(manifest["class_names"]),
                                        total_steps)
    images = data.image_dataset(files, image_size, image_format, batch_size, training=True,
                                seed=seed, deterministic=False, shuffle_buffer=shuffle_buffer,
                                num_workers=1)
    # callbacks.EpochTimer, as in training: each epoch's wall seconds in the history.
    uncached = model.fit(images, epochs=1 + timed_epochs, steps_per_epoch=steps,
                         callbacks=[callbacks.EpochTimer(batch_size)],
                         verbose=0).history["seconds"]

    start = time.perf_counter()
    head, cached_dataset, _ = training.head_on_cached_features(config, strategy, model, manifest,
                                                               total_steps, steps)
    build_s = time.perf_counter() - start
    cached = head.fit(cached_dataset, epochs=1 + timed_epochs, steps_per_epoch=steps,
                      callbacks=[callbacks.EpochTimer(batch_size)], verbose=0).history["seconds"]
    uncached_s, cached_s = min(uncached[1:]), min(cached[1:])
    return uncached_s, cached_s, {
        "model": model_name, "weights": "none", "image_size": image_size, "image_format": image_format,
        "records": manifest["num_records"], "batch_size": batch_size, "steps_per_epoch": steps,
        "uncached_epoch_s": [round(t, 4) for t in uncached],
        "cached_epoch_s": [round(t, 4) for t in cached],
        "cache_build_s": round(build_s, 3),
        "cache_bytes": feature_cache.size_bytes(manifest["num_records"],
                                                model.get_layer(models.BACKBONE)),
    }


def training_steps(files, image_size, image_format, model_name, batch_size, steps, repeats,
                   shuffle_buffer, seed, strategy, jit_compile="auto"):
    """Images/s of model.fit steps fed by the trainer's pipeline and by one batch held in memory
    (one warm-up epoch, then `repeats` timed ones of `steps` steps; the fastest counts)."""
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        config = train_config(model_name, seed, jit_compile=jit_compile)
        model = training.compiled_model(config, image_size, 16, (1 + repeats) * steps)
    pipeline = data.image_dataset(files, image_size, image_format, batch_size, training=True,
                                  seed=seed, deterministic=False, shuffle_buffer=shuffle_buffer,
                                  num_workers=1)
    in_memory = tf.data.Dataset.from_tensors(next(iter(pipeline))).repeat()
    result = {"model": model_name, "image_size": image_size, "batch_size": batch_size,
              "steps_per_epoch": steps, "policy": keras.mixed_precision.global_policy().name,
              "replicas": strategy.num_replicas_in_sync, "jit_compile": training.jit_compile(config)}
    for name, dataset in (("in_memory", in_memory), ("pipeline", pipeline)):
        utilization = GpuUtilization()
        seconds = model.fit(dataset, epochs=1 + repeats, steps_per_epoch=steps,
                            callbacks=[callbacks.EpochTimer(batch_size), utilization],
                            verbose=0).history["seconds"]
        result[f"img_s_{name}"] = steps * batch_size / min(seconds[1:])
        result[f"epoch_s_{name}"] = [round(t, 4) for t in seconds]
        result[f"gpu_utilization_{name}"] = utilization.mean
    result["pipeline_vs_in_memory"] = result["img_s_pipeline"] / result["img_s_in_memory"]
    result["input_bound"] = result["pipeline_vs_in_memory"] < 0.95
    return result
