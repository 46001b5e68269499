"""The reference assignment end to end, both ways, on the same pages (`--stages=assignment`):

(a) the reference notebook's way: `ImageDataGenerator(rescale=1/255).flow_from_dataframe` over
    the TIFF files feeding `fit` of model1 (5 epochs) and model2 (4 epochs), validation every
    epoch: every epoch decodes every page and runs VGG16 on it;
(b) this product: convert once (`tfrecords_tool.conversion.convert`), then `trainer.training.train`
    of model1 and model2 at its defaults (the shared feature cache: one VGG16 pass), validation
    every epoch.

Both train the same architectures (`training.compiled_model`, random VGG16 weights: nothing can
be downloaded here); the reference's RGB floats go through a gray uint8 conversion layer in
front of the model, which costs nothing next to VGG16. model3 (7 epochs in the reference) fine-
tunes VGG16, so there is no cache: it is timed apart, both ways, on fewer pages.
"""
import itertools
import os
import time

import tensorflow as tf
import tf_keras as keras

from tfrecords_tool import conversion
from trainer import training
from trainer.benchmarks import reference, training_stages

REFERENCE_EPOCHS = {"model1": 5, "model2": 4, "model3": 7}


def split_labels(labels_txt, work, pages, val_every=5):
    """`pages` lines of `labels_txt`, taken from each class in turn, every `val_every`-th one
    into val: {split: (official label file, CSV)} under `work` (the same pages both ways)."""
    by_class = {}
    with open(labels_txt) as f:
        for line in f:
            if line.strip():
                path, label = line.split()
                by_class.setdefault(label, []).append((path, label))
    rounds = itertools.zip_longest(*by_class.values())
    chosen = [page for row in rounds for page in row if page is not None][:pages]
    splits = {"train": [p for i, p in enumerate(chosen) if i % val_every],
              "val": [p for i, p in enumerate(chosen) if not i % val_every]}
    files = {}
    for split, entries in splits.items():
        txt, csv = os.path.join(work, f"{split}.txt"), os.path.join(work, f"{split}.csv")
        with open(txt, "w") as f:
            f.writelines(f"{path} {label}\n" for path, label in entries)
        with open(csv, "w") as f:
            f.write("path,label\n")
            f.writelines(f"{path},{label}\n" for path, label in entries)
        files[split] = (txt, csv)
    return files


def _reference_model(model_name, image_size, seed, total_steps):
    """The architecture, fed the reference loader's RGB floats in [0, 1]; one Adam at 1e-3 for
    every trainable layer, as the reference notebook compiles it."""
    config = training_stages.train_config(model_name, seed)
    model = training.compiled_model(config, image_size, 16, total_steps)
    rgb = keras.Input((image_size, image_size, 3), name="rgb")
    gray = keras.layers.Lambda(
        lambda x: tf.cast(tf.reduce_mean(x, axis=-1, keepdims=True) * 255.0, tf.uint8),
        name="to_gray_uint8")(rgb)
    wrapped = keras.Model(rgb, model(gray))
    wrapped.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    return wrapped


def reference_way(model_epochs, files, images_dir, image_size, batch_size, seed):
    """{model: wall seconds of its fit (generators, model build and validation included)}."""
    seconds = {}
    for model_name, epochs in model_epochs.items():
        start = time.perf_counter()
        keras.utils.set_random_seed(seed)
        flows = {split: reference.flow(csv, images_dir, image_size, batch_size, "sparse",
                                       shuffle=split == "train", seed=seed)
                 for split, (_, csv) in files.items()}
        model = _reference_model(model_name, image_size, seed, epochs * len(flows["train"]))
        model.fit(flows["train"], epochs=epochs, validation_data=flows["val"], verbose=0)
        seconds[model_name] = time.perf_counter() - start
    return seconds


def product_way(model_epochs, files, images_dir, image_size, batch_size, seed, workers, work,
                convert=True):
    """({model: wall seconds of its `train`}, seconds of the conversion or 0, data dir)."""
    data_dir = os.path.join(work, "assignment-records")
    start = time.perf_counter()
    if convert:
        for split, (txt, _) in files.items():
            conversion.convert(labels=txt, images_dir=images_dir, output_dir=data_dir,
                               image_size=image_size, workers=workers, split=split, seed=seed)
    convert_s = time.perf_counter() - start if convert else 0.0
    seconds = {}
    for model_name, epochs in model_epochs.items():
        start = time.perf_counter()
        config = training_stages.train_config(
            model_name, seed, data_dir=data_dir, epochs=epochs, batch_size=batch_size,
            model_dir=os.path.join(work, "assignment-runs", model_name))
        training.train(config, strategy=tf.distribute.get_strategy())
        seconds[model_name] = time.perf_counter() - start
    return seconds, convert_s, data_dir


def assignment(labels_txt, images_dir, work, image_size, batch_size, pages, model3_pages, seed,
               workers):
    """Both ways for models 1+2 on `pages` pages and for model3 on `model3_pages`; the result
    dict with assignment_speedup and assignment_model3_speedup."""
    heads = {name: REFERENCE_EPOCHS[name] for name in ("model1", "model2")}
    files = split_labels(labels_txt, _mkdir(work, "assignment"), pages)
    reference_times = reference_way(heads, files, images_dir, image_size, batch_size, seed)
    product, convert_s, _ = product_way(heads, files, images_dir, image_size, batch_size, seed,
                                        workers, work)
    reference_s, product_s = sum(reference_times.values()), convert_s + sum(product.values())

    model3 = {"model3": REFERENCE_EPOCHS["model3"]}
    files3 = split_labels(labels_txt, _mkdir(work, "assignment-model3"), model3_pages)
    reference3 = reference_way(model3, files3, images_dir, image_size, batch_size, seed)
    product3, convert3_s, _ = product_way(model3, files3, images_dir, image_size, batch_size,
                                          seed, workers, os.path.join(work, "assignment-model3"))
    return {
        "image_size": image_size, "batch_size": batch_size, "epochs": REFERENCE_EPOCHS,
        "pages": {split: sum(1 for _ in open(txt)) for split, (txt, _) in files.items()},
        "reference_s": {k: round(v, 2) for k, v in reference_times.items()},
        "product_s": {k: round(v, 2) for k, v in product.items()}, "convert_s": round(convert_s, 2),
        "assignment_reference_s": round(reference_s, 2),
        "assignment_product_s": round(product_s, 2),
        "assignment_speedup": reference_s / product_s,
        "model3_pages": {split: sum(1 for _ in open(txt)) for split, (txt, _) in files3.items()},
        "model3_reference_s": round(reference3["model3"], 2),
        "model3_product_s": round(convert3_s + product3["model3"], 2),
        "assignment_model3_speedup": reference3["model3"] / (convert3_s + product3["model3"]),
    }


def _mkdir(work, name):
    path = os.path.join(work, name)
    os.makedirs(path, exist_ok=True)
    return path
