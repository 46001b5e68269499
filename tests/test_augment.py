"""Tests for trainer.augment: a page stays a page, off at inference, seeded, saved and shown."""
import glob

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer.augment import LEVELS, AugmentedImages, RandomPageTransform, augmentation

SIZE = 48


def _pages(n=4, seed=0):
    """White float32 pages (255) with random dark text-like blocks, [n, SIZE, SIZE, 1]."""
    rng = np.random.default_rng(seed)
    pages = np.full([n, SIZE, SIZE, 1], 255.0, np.float32)
    for page in pages:
        for _ in range(12):
            y, x = rng.integers(2, SIZE - 8, size=2)
            page[y:y + 2, x:x + 6] = rng.integers(0, 60)
    return pages


def _marked_page():
    """A white page with one black square in the top-left corner."""
    page = np.full([SIZE, SIZE, 1], 255.0, np.float32)
    page[3:11, 3:11] = 0.0
    return page


def test_levels():
    assert augmentation("none") is None
    with pytest.raises(ValueError, match="unknown augmentation level 'heavy'"):
        augmentation("heavy")
    assert set(LEVELS) == {"light", "strong"}
    for level in LEVELS:
        layer = augmentation(level)
        assert layer.name == "augmentation"
        assert not any("flip" in sub.name.lower() for sub in layer.layers)


@pytest.mark.parametrize("level", ["light", "strong"])
def test_training_changes_images_in_range_keeping_shape_and_dtype(level):
    layer = augmentation(level, seed=1)
    images = _pages()
    images[0, 0, :] = 0.0  # extremes: contrast, brightness and noise must not leave [0, 255]
    out = layer(images, training=True).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert all(np.abs(o - i).mean() > 1.0 for o, i in zip(out, images))


def test_off_at_inference():
    layer = augmentation("strong", seed=1)
    images = _pages()
    np.testing.assert_array_equal(layer(images, training=False).numpy(), images)
    np.testing.assert_array_equal(layer(images).numpy(), images)  # no training flag: off


def test_never_flips_a_page():
    """A mark in the top-left corner stays in the top-left quadrant, over many strong draws."""
    layer = augmentation("strong", seed=3)
    pages = np.repeat(_marked_page()[None], 64, axis=0)
    for _ in range(4):
        out = layer(pages, training=True).numpy()[..., 0]
        for page in out:
            rows, cols = np.nonzero(page < 128)
            assert len(rows) > 20  # the mark is still there
            assert rows.mean() < SIZE / 2 and cols.mean() < SIZE / 2


def test_borders_are_filled_with_white():
    layer = RandomPageTransform(rotation=20.0, translation=0.25, zoom=0.3, seed=0)
    blank = np.full([8, SIZE, SIZE, 1], 255.0, np.float32)
    np.testing.assert_allclose(layer(blank, training=True).numpy(), blank, atol=1e-3)


def test_reproducible_under_a_seed():
    images = _pages()
    first = augmentation("strong", seed=7)(images, training=True)
    again = augmentation("strong", seed=7)(images, training=True)
    other = augmentation("strong", seed=8)(images, training=True)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.allclose(first.numpy(), other.numpy())


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_float32_under_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = augmentation("light", seed=1)
        inputs = keras.Input((SIZE, SIZE, 1))
        outputs = layer(inputs)
        for images in (_pages(), tf.cast(_pages(), tf.float16)):
            assert layer(images, training=True).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert outputs.dtype == tf.float32


def test_saved_model_reloads_in_safe_mode(tmp_path):
    inputs = keras.Input((SIZE, SIZE, 1), dtype="uint8")
    x = keras.layers.Rescaling(1.0)(inputs)  # uint8 -> float32, as the real model's cast
    x = augmentation("strong", seed=2)(x)
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(16, activation="softmax")(x))
    path = str(tmp_path / "model.keras")
    model.save(path)

    loaded = keras.models.load_model(path, safe_mode=True)
    images = _pages().astype(np.uint8)
    np.testing.assert_array_equal(model.predict(images, verbose=0),
                                  loaded.predict(images, verbose=0))
    configs = [[sub.get_config() for sub in m.get_layer("augmentation").layers]
               for m in (model, loaded)]
    assert configs[0] == configs[1]


def _read_images(log_dir):
    images = {}
    for path in glob.glob(f"{log_dir}/augmentation/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                encoded = tf.make_ndarray(value.tensor)[2:]  # width, height, then PNGs
                images[value.tag] = [tf.io.decode_png(png).numpy() for png in encoded]
    return images


def test_augmented_images_are_written_to_tensorboard(tmp_path):
    pages = _pages(5).astype(np.uint8)
    callback = AugmentedImages(str(tmp_path), augmentation("strong", seed=4), pages,
                               max_images=3, versions=2)
    callback.on_train_begin()

    strips = _read_images(tmp_path)["augmented/examples"]
    assert len(strips) == 3
    for strip, page in zip(strips, pages):
        assert strip.shape == (SIZE, 3 * SIZE + 2 * 2, 1)
        np.testing.assert_array_equal(strip[:, :SIZE], page)  # the original comes first
        assert not np.array_equal(strip[:, SIZE + 2:2 * SIZE + 2], page)


def test_augmented_images_only_on_chief(tmp_path):
    AugmentedImages(str(tmp_path), augmentation("light"), _pages().astype(np.uint8),
                    is_chief=False).on_train_begin()
    assert not glob.glob(f"{tmp_path}/augmentation/*")
