"""The training loop's own cost: `fit` with every callback `trainer.training.train` uses vs a
bare `fit` with none, on the same model, the same batch held in memory and the same steps.

The input is one batch repeated, so the only difference between the two is the host work of the
callbacks' step hooks (and the logs Keras syncs to numpy for them). Both are timed by
`callbacks.EpochTimer` (the bare fit's only callback; the product's own, which ends before the
checkpoints); the epoch-end work after it (checkpoints, backups, histograms) is timed apart: it
is paid once per epoch, not per step.
"""
import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from trainer import callbacks, compat, training
from trainer.benchmarks import training_stages


def _in_memory_batch(shape, num_classes, batch_size, seed, dtype):
    rng = np.random.default_rng(seed)
    if dtype == tf.uint8:
        inputs = rng.integers(0, 256, (batch_size, *shape), dtype=np.uint8)
    else:
        inputs = rng.random((batch_size, *shape), dtype=np.float32)
    labels = rng.integers(0, num_classes, batch_size)
    return tf.data.Dataset.from_tensors((inputs, labels)).repeat()


def loop_overhead(model_name, image_size, cached, batch_size, steps, epochs, repeats, seed,
                  work_dir, strategy, steps_per_execution=None, jit_compile="auto"):
    """Steps/s of a bare fit and of the product's fit, alternating `repeats` times (each fit: one
    warm-up epoch, then `epochs` timed ones of `steps` steps; the fastest epoch of each kind
    counts). `cached`: the head alone on VGG16 features (models 1/2 with the feature cache)."""
    num_classes = 16
    config = training_stages.train_config(model_name, seed, batch_size=batch_size, val_split="",
                                          steps_per_execution=steps_per_execution,
                                          jit_compile=jit_compile)
    total_steps = repeats * (1 + epochs) * steps

    def build():
        with strategy.scope():
            model = training.compiled_model(config, image_size, num_classes, total_steps)
        fitted = (training.compiled_head(config, strategy, model, total_steps, steps)[1] if cached
                  else model)
        return model, fitted

    # One model for each kind: a fit with BackupAndRestore leaves its model unfit for a fit
    # without it (Keras deletes the model's training state at train end).
    built = {"bare": build(), "product": build()}
    fitted = built["bare"][1]
    dataset = _in_memory_batch(fitted.input_shape[1:], num_classes, batch_size, seed,
                               tf.as_dtype(fitted.inputs[0].dtype))
    timings = {"bare": [], "product": []}
    epoch_end_s, tensor_logs = [], None
    for repeat in range(repeats):
        for kind in ("bare", "product"):
            model, fitted = built[kind]
            # The product's callbacks hold the EpochTimer that times its epochs.
            fit_callbacks = [callbacks.EpochTimer(batch_size)]
            if kind == "product":
                run_config = dataclasses.replace(
                    config, model_dir=os.path.join(work_dir, f"loop-{model_name}-{repeat}"))
                fit_callbacks = training.fit_callbacks(run_config, strategy, model, fitted,
                                                       dataset, chief=True, steps_per_epoch=steps)
                tensor_logs = compat.logs_stay_tensors(fit_callbacks)
            start = time.perf_counter()
            seconds = fitted.fit(dataset, epochs=1 + epochs, steps_per_epoch=steps,
                                 callbacks=fit_callbacks, verbose=0).history["seconds"]
            timings[kind] += seconds[1:]
            if kind == "product":
                epoch_end_s.append((time.perf_counter() - start - sum(seconds)) / (1 + epochs))
    bare_steps_s = steps / min(timings["bare"])
    product_steps_s = steps / min(timings["product"])
    return {"model": model_name, "cached_head": cached, "image_size": image_size,
            "batch_size": batch_size, "steps_per_epoch": steps,
            "steps_per_execution": training.steps_per_execution(config, cached, steps),
            "jit_compile": training.jit_compile(config),
            "bare_steps_s": round(bare_steps_s, 2), "product_steps_s": round(product_steps_s, 2),
            "overhead": bare_steps_s / product_steps_s,
            "step_loop_s": {kind: [round(t, 4) for t in times] for kind, times in timings.items()},
            "product_epoch_end_s": round(min(epoch_end_s), 3),
            "product_step_logs_stay_tensors": tensor_logs}
