"""Training-only augmentation for scanned pages, run inside the model on the accelerator.

`augmentation(level)` returns a `keras.Sequential` named `augmentation`. The model applies it
between the cast of its uint8 input to float (values 0..255, [B, S, S, 1]) and the VGG16
preprocessing, so the host input pipeline does no more work than without augmentation.

A page must stay a page: there are no flips (a mirrored letter is not a letter), the geometry
changes are small, and the borders a rotation or shift exposes are white paper (255).

    op           light    strong   what it imitates
    rotation     ±2°      ±5°      a page fed or laid skewed
    translation  ±3%      ±6%      a page off centre (of the height and width, independently)
    zoom         ±5%      ±10%     other page sizes and scan resolutions (same in both axes)
    contrast     ±10%     ±25%     toner and scanner contrast (about each page's mean)
    brightness   ±5%      ±10%     scanner exposure (of 255, added)
    noise        σ 4      σ 8      sensor noise (gray levels, independent per pixel)

Each value is drawn uniformly per image (noise: per pixel). Rotation, translation and zoom are
one bilinear resampling (three separate Keras layers would blur the text three times); the
result is clipped to [0, 255].

The layers are off unless called with `training=True` (`model.fit` does; `model(x)`,
`predict` and `evaluate` do not), and they run in float32 under any mixed precision policy: the
output is float32. Their random state is a `tf.random.Generator` seeded with `seed`; under
`tf.distribute` every replica draws its own stream.
"""
import math
import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from trainer import compat

LEVELS = {
    "light": dict(rotation=2.0, translation=0.03, zoom=0.05, contrast=0.10, brightness=0.05,
                  noise=4.0),
    "strong": dict(rotation=5.0, translation=0.06, zoom=0.10, contrast=0.25, brightness=0.10,
                   noise=8.0),
}
CHOICES = ("none",) + tuple(LEVELS)  # values of the trainer's augmentation flag


@keras.saving.register_keras_serializable(package="trainer")
class RandomPageTransform(compat.base_random_layer()):
    """Rotates each image by up to ±`rotation` degrees, shifts it by up to ±`translation` of its
    size and zooms it by a factor in 1 ± `zoom`, about its centre, in one bilinear resampling;
    exposed borders get `fill_value`. Training only."""

    def __init__(self, rotation, translation, zoom, fill_value=255.0, seed=None, **kwargs):
        super().__init__(seed=seed, force_generator=True, **kwargs)
        self.rotation = rotation
        self.translation = translation
        self.zoom = zoom
        self.fill_value = fill_value
        self.seed = seed

    def _uniform(self, batch, limit):
        return compat.random_generator(self).random_uniform([batch], -limit, limit,
                                                            dtype=tf.float32)

    def call(self, images, training=None):
        images = tf.cast(images, self.compute_dtype)
        if not training:
            return images
        shape = tf.shape(images)
        batch = shape[0]
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        angle = self._uniform(batch, self.rotation * math.pi / 180.0)
        scale = 1.0 / (1.0 + self._uniform(batch, self.zoom))
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        x0 = cx + self._uniform(batch, self.translation) * width  # where the centre moves to
        y0 = cy + self._uniform(batch, self.translation) * height
        # Output pixel p samples the input at c + scale * R(-angle) (p - p0).
        cos, sin = scale * tf.cos(angle), scale * tf.sin(angle)
        zeros = tf.zeros_like(angle)
        transforms = tf.stack([cos, sin, cx - cos * x0 - sin * y0,
                               -sin, cos, cy + sin * x0 - cos * y0, zeros, zeros], axis=1)
        outputs = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3],
            fill_value=self.fill_value, fill_mode="CONSTANT", interpolation="BILINEAR")
        return tf.ensure_shape(outputs, images.shape)

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation,
                "translation": self.translation, "zoom": self.zoom,
                "fill_value": self.fill_value, "seed": self.seed}


@keras.saving.register_keras_serializable(package="trainer")
class RandomScanQuality(compat.base_random_layer()):
    """Scales each image's contrast about its mean by a factor in 1 ± `contrast`, adds a
    brightness offset of up to ±`brightness` * 255 and Gaussian noise of standard deviation
    `noise` (gray levels) per pixel, then clips to [0, 255]. Training only."""

    def __init__(self, contrast, brightness, noise, seed=None, **kwargs):
        super().__init__(seed=seed, force_generator=True, **kwargs)
        self.contrast = contrast
        self.brightness = brightness
        self.noise = noise
        self.seed = seed

    def call(self, images, training=None):
        images = tf.cast(images, self.compute_dtype)
        if not training:
            return images
        per_image = [tf.shape(images)[0], 1, 1, 1]
        factor = 1.0 + compat.random_generator(self).random_uniform(
            per_image, -self.contrast, self.contrast, dtype=images.dtype)
        offset = 255.0 * compat.random_generator(self).random_uniform(
            per_image, -self.brightness, self.brightness, dtype=images.dtype)
        noise = compat.random_generator(self).random_normal(
            tf.shape(images), stddev=self.noise, dtype=images.dtype)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        return tf.clip_by_value((images - mean) * factor + mean + offset + noise, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "contrast": self.contrast,
                "brightness": self.brightness, "noise": self.noise, "seed": self.seed}


def augmentation(level, seed=None):
    """The `augmentation` layer for `level` ("none", "light" or "strong"; None for "none").

    Input: images with values 0..255 (white paper = 255), [B, H, W, C]; output: float32, same
    shape. Built fresh with the same `seed`, it draws the same augmentations.
    """
    if level == "none":
        return None
    if level not in LEVELS:
        raise ValueError(f"unknown augmentation level {level!r}: "
                         f"expected one of {', '.join(CHOICES)}")
    r = LEVELS[level]
    return keras.Sequential([
        RandomPageTransform(r["rotation"], r["translation"], r["zoom"], seed=seed,
                            dtype="float32", name="page_transform"),
        RandomScanQuality(r["contrast"], r["brightness"], r["noise"],
                          seed=None if seed is None else seed + 1, dtype="float32",
                          name="scan_quality"),
    ], name="augmentation")


class AugmentedImages(keras.callbacks.Callback):
    """At the start of training, shows in TensorBoard what the model sees.

    Writes one image per example (the first `max_images` of `images`, uint8 [N, S, S, 1]) to
    `log_dir/augmentation`, tag `augmented/examples`: the original, then `versions` augmented
    copies, side by side. Only the chief writes. Draws from a copy of `layer`, so the training
    layer's random stream is left as it is.
    """

    def __init__(self, log_dir, layer, images, max_images=4, versions=4, is_chief=True):
        super().__init__()
        self.log_dir = os.path.join(log_dir, "augmentation")
        self.layer = layer
        self.images = np.asarray(images)[:max_images]
        self.versions = versions
        self.is_chief = is_chief

    def on_train_begin(self, logs=None):
        if not self.is_chief:
            return
        layer = type(self.layer).from_config(self.layer.get_config())
        images = tf.cast(self.images, tf.float32)
        strips = [images]
        for _ in range(self.versions):
            strips.append(tf.fill([len(self.images), images.shape[1], 2, images.shape[3]], 128.0))
            strips.append(layer(images, training=True))
        strip = tf.cast(tf.round(tf.concat(strips, axis=2)), tf.uint8)
        writer = tf.summary.create_file_writer(self.log_dir)
        with writer.as_default(step=0), tf.summary.record_if(True):
            tf.summary.image("augmented/examples", strip, max_outputs=len(self.images),
                             description=f"original, then {self.versions} augmented versions")
        writer.close()
