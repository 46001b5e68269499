"""What evaluate, predict and export pay before their first page: loading a trained model's
.keras file, with `keras.models.load_model(path, compile=False)` and with the product's loader
(`trainer.compat.load_model`, which trainer.artifacts uses), alternating on the same file."""
import os
import time

import tf_keras as keras

from trainer import compat, models


def model_load(model_name, image_size, repeats, seed, work_dir):
    """Seconds of each loader (`repeats` loads each, alternating; the fastest counts) on one
    saved `model_name`; `speedup` = Keras's seconds / the product's."""
    keras.utils.set_random_seed(seed)
    path = os.path.join(work_dir, f"{model_name}.keras")
    models.build_model(model_name, image_size, 16, "none").save(path)
    loaders = {"keras": lambda: keras.models.load_model(path, compile=False),
               "product": lambda: compat.load_model(path)}
    seconds = {name: [] for name in loaders}
    for _ in range(repeats):
        for name, load in loaders.items():
            start = time.perf_counter()
            load()
            seconds[name].append(round(time.perf_counter() - start, 3))
            keras.backend.clear_session()
    best = {name: min(samples) for name, samples in seconds.items()}
    return {"model": model_name, "image_size": image_size,
            "file_mb": round(os.path.getsize(path) / 2**20, 1), "keras_s": best["keras"], "product_s": best["product"], "samples_s": seconds,
            "speedup": round(best["keras"] / best["product"], 2)}
