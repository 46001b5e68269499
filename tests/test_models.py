"""Tests for trainer.models: architectures of docs/models.md, weights files, preprocessing,
feature-cache split, model3's two learning rates, checkpoints and saving. Small images except for
the counts."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer.models import (
    MODEL3_TRAINABLE_VGG_LAYERS, VGGPreprocess, build_model, compile_model,
    split_backbone_head,
)

SPEC_COUNTS = {  # docs/models.md: total, trainable, non-trainable at 224x224, 16 classes
    "model1": (15_063_664, 348_976, 14_714_688),
    "model2": (17_935_376, 3_220_688, 14_714_688),
    "model3": (17_935_376, 12_659_920, 5_275_456),
}


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


def _labels(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 16, (n,))


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_param_counts_224(name):
    model = build_model(name, image_size=224, num_classes=16, weights="none")
    total, trainable, frozen = SPEC_COUNTS[name]
    assert model.count_params() == total
    assert _count(model.trainable_weights) == trainable
    assert _count(model.non_trainable_weights) == frozen
    assert model.output_shape == (None, 16)


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_trainable_split(name):
    model = build_model(name, image_size=32 if name != "model1" else 128, weights="none")
    vgg = model.get_layer("vgg16")
    trainable_vgg = [layer.name for layer in vgg.layers if layer.trainable]
    assert trainable_vgg == (list(MODEL3_TRAINABLE_VGG_LAYERS) if name == "model3" else [])
    head = model.layers[model.layers.index(vgg) + 1:]
    assert head and all(layer.trainable for layer in head)
    expected_head = (["conv_head", "pool_head", "flatten", "FC1", "FC2", "predictions"]
                     if name == "model1" else ["conv_fc1", "conv_fc2", "flatten", "predictions"])
    assert [layer.name for layer in head] == expected_head


def test_model1_refuses_small_images():
    with pytest.raises(ValueError, match="model1 needs image_size >= 128"):
        build_model("model1", image_size=96, weights="none")
    assert build_model("model1", image_size=128, weights="none").output_shape == (None, 16)
    with pytest.raises(ValueError, match="image_size >= 32"):
        build_model("model2", image_size=16, weights="none")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("model4", weights="none")


@pytest.mark.parametrize("size, kernel", [(32, 1), (64, 2), (100, 3)])
def test_model2_first_conv_kernel_is_feature_map_size(size, kernel):
    model = build_model("model2", image_size=size, num_classes=5, weights="none")
    assert model.get_layer("vgg16").output_shape == (None, kernel, kernel, 512)
    assert model.get_layer("conv_fc1").kernel.shape == (kernel, kernel, 512, 128)
    assert model.get_layer("conv_fc1").output_shape == (None, 1, 1, 128)
    assert model.predict(_images(2, size), verbose=0).shape == (2, 5)


@pytest.mark.parametrize("filename", ["vgg16_notop.h5", "vgg16_notop.weights.h5"])
def test_weights_file(tmp_path, filename):
    keras.utils.set_random_seed(1)
    reference = keras.applications.VGG16(include_top=False, weights=None)
    path = str(tmp_path / filename)
    reference.save_weights(path)
    model = build_model("model2", image_size=32, weights=path)
    vgg = model.get_layer("vgg16")
    ref_layers = [layer for layer in reference.layers if layer.weights]
    assert len(ref_layers) == 13
    for ref_layer in ref_layers:
        for expected, actual in zip(ref_layer.get_weights(), vgg.get_layer(ref_layer.name).get_weights()):
            np.testing.assert_array_equal(actual, expected)


def test_weights_file_errors(tmp_path):
    missing = str(tmp_path / "nope.h5")
    with pytest.raises(ValueError, match="nope.h5.*does not exist"):
        build_model("model2", image_size=32, weights=missing)
    junk = tmp_path / "junk.h5"
    junk.write_text("not an HDF5 file")
    with pytest.raises(ValueError, match="junk.h5.*does not fit"):
        build_model("model2", image_size=32, weights=str(junk))
    other = str(tmp_path / "vgg19.h5")  # 16 conv layers instead of 13
    keras.applications.VGG19(include_top=False, weights=None).save_weights(other)
    with pytest.raises(ValueError, match="vgg19.h5.*does not fit"):
        build_model("model2", image_size=32, weights=other)
    dense = str(tmp_path / "dense.weights.h5")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save_weights(dense)
    with pytest.raises(ValueError, match="dense.weights.h5.*does not fit"):
        build_model("model2", image_size=32, weights=dense)


def test_imagenet_weights_unavailable(monkeypatch):
    from tf_keras.src.utils import data_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(data_utils, "get_file", offline)
    with pytest.raises(ValueError, match="ImageNet VGG16 weights.*notop.h5"):
        build_model("model2", image_size=32, weights="imagenet")


def test_preprocessing_matches_vgg16_preprocess_input():
    images = _images(3, 32)
    expected = keras.applications.vgg16.preprocess_input(
        tf.repeat(tf.cast(images, tf.float32), 3, axis=-1))
    actual = VGGPreprocess()(images)
    assert actual.dtype == tf.float32 and actual.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=0, atol=1e-4)
    model = build_model("model2", image_size=32, weights="none")
    in_model = model.get_layer("vgg16").get_layer("preprocess")(images)
    np.testing.assert_allclose(in_model.numpy(), expected.numpy(), rtol=0, atol=1e-4)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    assert VGGPreprocess()(images).dtype == tf.bfloat16
    model = build_model("model2", image_size=32, weights="none")
    assert model.get_layer("conv_fc1").compute_dtype == "bfloat16"
    assert model.output.dtype == tf.float32


def test_split_backbone_head_shares_weights():
    model = build_model("model2", image_size=32, weights="none")
    backbone, head = split_backbone_head(model)
    images = _images(4, 32)
    np.testing.assert_allclose(head(backbone(images)).numpy(), model(images).numpy(), atol=1e-6)
    for name in ("conv_fc1", "conv_fc2", "predictions"):
        assert head.get_layer(name) is model.get_layer(name)
    assert backbone is model.get_layer("vgg16")
    # training the head on cached features trains the model
    features = backbone.predict(images, verbose=0)
    compile_model(head, keras.optimizers.Adam(1e-2))
    with pytest.raises(ValueError, match="takes no backbone_optimizer"):
        compile_model(head, keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-5))
    before = model.get_layer("predictions").kernel.numpy()
    head.fit(features, _labels(4), epochs=1, verbose=0)
    assert not np.allclose(model.get_layer("predictions").kernel.numpy(), before)
    np.testing.assert_allclose(head(features).numpy(), model(images).numpy(), atol=1e-5)


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def _backbone_and_head_vars(model):
    backbone = model.get_layer("vgg16").trainable_variables
    ids = {id(v) for v in backbone}
    return backbone, [v for v in model.trainable_variables if id(v) not in ids]


def test_model3_backbone_learning_rate():
    keras.utils.set_random_seed(0)
    images, labels = _images(8, 32), _labels(8)
    model = build_model("model3", image_size=32, weights="none")
    compile_model(model, keras.optimizers.Adam(1e-3), keras.optimizers.Adam(0.0))
    backbone, head = _backbone_and_head_vars(model)
    assert len(backbone) == 8  # block4_conv3, block5_conv1..3: kernel + bias
    frozen_before = _snapshot(model.non_trainable_variables)
    backbone_before, head_before = _snapshot(backbone), _snapshot(head)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert not any(_changed(backbone_before, backbone))  # backbone lr 0
    assert all(_changed(head_before, head))
    assert not any(_changed(frozen_before, model.non_trainable_variables))
    assert model.optimizer.iterations.numpy() == model.backbone_optimizer.iterations.numpy() == 1
    # without a backbone optimizer the head's optimizer trains the six VGG layers too
    model = build_model("model3", image_size=32, weights="none")
    compile_model(model, keras.optimizers.Adam(1e-3))
    backbone, _ = _backbone_and_head_vars(model)
    backbone_before = _snapshot(backbone)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert all(_changed(backbone_before, backbone))


def test_model3_mixed_float16_mirrored_loss_scaling():
    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_model("model3", image_size=32, weights="none")
        compile_model(model, keras.optimizers.Adam(1e-3), keras.optimizers.SGD(1e-4))
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert isinstance(model.backbone_optimizer, keras.mixed_precision.LossScaleOptimizer)
    backbone, head = _backbone_and_head_vars(model)
    backbone_before, head_before = _snapshot(backbone), _snapshot(head)
    history = model.fit(_images(8, 32), _labels(8), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.optimizer.iterations.numpy() == model.backbone_optimizer.iterations.numpy() == 1
    head_step = max(np.abs(b - v.numpy()).max() for b, v in zip(head_before, head))
    backbone_step = max(np.abs(b - v.numpy()).max() for b, v in zip(backbone_before, backbone))
    assert head_step > 0 and 0 < backbone_step < head_step / 10


def test_checkpoint_tracks_both_optimizers(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = _images(8, 32), _labels(8)

    def make():
        model = build_model("model3", image_size=32, weights="none")
        return compile_model(model, keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-5))

    model = make()
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = make()
    backbone, head = _backbone_and_head_vars(restored)
    restored.optimizer.build(head)  # slots exist, so restore() assigns them right away
    restored.backbone_optimizer.build(backbone)
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for old, new in [(model.optimizer, restored.optimizer),
                     (model.backbone_optimizer, restored.backbone_optimizer)]:
        assert new.iterations.numpy() == 2
        assert len(new.variables) == len(old.variables) > 1
        for a, b in zip(old.variables, new.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(model.predict(images, verbose=0),
                                  restored.predict(images, verbose=0))


def test_save_load_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = _images(4, 32), _labels(4)
    model = build_model("model3", image_size=32, weights="none")
    compile_model(model, keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-5))
    model.fit(images, labels, epochs=1, verbose=0)
    expected = model.predict(images, verbose=0)
    model.save(str(tmp_path / "full.keras"))
    loaded = keras.models.load_model(str(tmp_path / "full.keras"), safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)
    assert [v.name for v in loaded.trainable_variables] == [
        v.name for v in model.trainable_variables]
