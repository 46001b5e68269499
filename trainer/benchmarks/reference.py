"""The reference notebook's input: keras ImageDataGenerator(rescale=1/255).flow_from_dataframe."""
import time

import tf_keras as keras

from trainer import compat


def flow(csv_path, images_dir, image_size, batch_size, class_mode="categorical", shuffle=True,
         seed=None):
    """The reference notebook's loader over the `path,label` rows of `csv_path`: RGB floats in
    [0, 1] at image_size x image_size, decoded from the files at every pass."""
    import pandas as pd

    compat.image_data_generator_without_scipy()
    frame = pd.read_csv(csv_path, dtype={"label": str})
    return keras.preprocessing.image.ImageDataGenerator(rescale=1.0 / 255).flow_from_dataframe(
        frame, directory=images_dir, x_col="path", y_col="label",
        target_size=(image_size, image_size), batch_size=batch_size, class_mode=class_mode,
        shuffle=shuffle, seed=seed)


def seed_loader(csv_path, images_dir, image_size, batch_size, repeats):
    """Images/s of the reference notebook's loader, one full pass (len(gen) batches) per
    measurement: rgb, categorical, shuffled, at image_size x image_size."""
    scipy_placeholder = compat.image_data_generator_without_scipy()
    generator = flow(csv_path, images_dir, image_size, batch_size)
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
            "scipy_placeholder": scipy_placeholder}
