"""trainer.compat: one test per entry, each failing when an upgrade of TensorFlow / tf_keras
removes or changes what the entry relies on (the attribute exists AND does what the product
needs). Tiny Dense models only."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer import compat
from trainer.reporting import read_events


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _data(n=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype("float32"), rng.normal(size=(n, 2)).astype("float32")


def test_autograph_skips_tf_keras_but_converts_our_code():
    from tensorflow.python.autograph.impl import conversion

    import trainer.callbacks

    rules = __import__("tensorflow.python.autograph.core.config", fromlist=["x"]).CONVERSION_RULES
    compat.autograph_skip_tf_keras()  # idempotent: `import trainer` already ran it
    again = __import__("tensorflow.python.autograph.core.config", fromlist=["x"]).CONVERSION_RULES
    assert len(again) == len(rules)
    # what AutoGraph asks before converting a function
    assert conversion.is_allowlisted(keras.layers.Dense.call)
    assert conversion.is_allowlisted(keras.Model.train_step)
    assert not conversion.is_allowlisted(trainer.callbacks.reference_rule)


def test_learning_rate_setting_is_the_schedule_or_the_constant():
    schedule = keras.optimizers.schedules.CosineDecay(0.0, 10, warmup_target=1.0, warmup_steps=4)
    optimizer = keras.optimizers.Adam(schedule)
    assert compat.learning_rate_setting(optimizer) is schedule
    # the public attribute is NOT the schedule (hence the entry): the latest step's rate
    assert not isinstance(optimizer.learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    scaled = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam(schedule))
    assert compat.learning_rate_setting(scaled) is schedule
    constant = compat.learning_rate_setting(keras.optimizers.SGD(0.25))
    assert float(keras.backend.get_value(constant)) == 0.25


def test_back_up_writes_what_backup_and_restore_restores(tmp_path):
    x, y = _data()
    saved = {}

    class BackUpAtStep1(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                backup.back_up(epoch=0, batch=1)
                saved["weights"] = [w.copy() for w in self.model.get_weights()]
                raise KeyboardInterrupt  # a kill: no on_train_end, the backup stays

    backup = compat.BackupAndRestore(str(tmp_path / "backup"), save_freq=1000)
    with pytest.raises(KeyboardInterrupt):
        _tiny_model().fit(x, y, batch_size=2, epochs=2, verbose=0,
                          callbacks=[backup, BackUpAtStep1()])
    assert glob.glob(str(tmp_path / "backup" / "**" / "*.index"), recursive=True)

    resumed = {}

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            resumed["weights"] = [w.copy() for w in self.model.get_weights()]

        def on_train_batch_begin(self, batch, logs=None):
            resumed.setdefault("first_batch", batch)

    model = _tiny_model(seed=1)  # other initial weights
    model.fit(x, y, batch_size=2, epochs=1, verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1000),
                         Record()])
    for restored, expected in zip(resumed["weights"], saved["weights"]):
        np.testing.assert_array_equal(restored, expected)
    assert resumed["first_batch"] == 2  # resumed after step 1 of epoch 0


def test_should_back_up_is_asked_before_every_backup(tmp_path):
    asked = []

    class Never(compat.BackupAndRestore):
        def should_back_up(self, epoch, batch):
            asked.append((epoch, batch))
            return False

    x, y = _data()
    _tiny_model().fit(x, y, batch_size=2, epochs=1, verbose=0,
                      callbacks=[Never(str(tmp_path / "backup"), save_freq=1,
                                       delete_checkpoint=False)])
    assert asked == [(0, 0), (0, 1), (0, 2), (0, 3)]  # its own every-step backups
    assert not glob.glob(str(tmp_path / "backup" / "**" / "*.index"), recursive=True)


def test_flush_tensorboard_flushes_the_callbacks_writers(tmp_path):
    x, y = _data()
    tensorboard = keras.callbacks.TensorBoard(str(tmp_path), write_graph=False, profile_batch=0)
    seen = {}

    def flush(epoch, logs):
        # A summary left in the train writer's buffer (no `as_default()` exit, which flushes):
        # what batch-level summaries written between epoch ends are.
        from tensorflow.python.ops import summary_ops_v2  # pylint: disable=import-outside-toplevel

        state = summary_ops_v2._summary_state  # pylint: disable=protected-access
        previous = state.writer
        writer = tensorboard._writers["train"]  # pylint: disable=protected-access
        writer.set_as_default(step=epoch)
        tf.summary.scalar("probe", 1.0)
        # Not a noop writer's set_as_default (which does nothing): this writer, closed when fit
        # ends, would stay the process's default and break every later summary.
        state.writer = previous
        tf.summary.experimental.set_step(None)
        seen["before"] = read_events(str(tmp_path / "train"))
        seen["flushed"] = compat.flush_tensorboard(tensorboard)
        seen["after"] = read_events(str(tmp_path / "train"))

    _tiny_model().fit(x, y, batch_size=2, epochs=1, verbose=0, validation_data=(x, y),
                      callbacks=[tensorboard, keras.callbacks.LambdaCallback(on_epoch_end=flush)])
    assert seen["flushed"] == 2  # train and validation
    assert "probe" not in seen["before"]  # still buffered: writers flush every 2 min
    assert seen["after"]["probe"] == {0: 1.0}
    assert list(seen["after"]["epoch_loss"]) == [0]
    assert all(os.path.getsize(f) > 0 for f in glob.glob(str(tmp_path / "*" / "events.*")))


def test_base_random_layer_gives_a_seeded_generator():
    base = compat.base_random_layer()
    assert issubclass(base, keras.layers.Layer)

    class Noise(base):
        def __init__(self, seed):
            super().__init__(seed=seed, force_generator=True)

        def call(self, x):
            generator = compat.random_generator(self)
            return (x + generator.random_uniform(tf.shape(x), -1.0, 1.0, dtype=tf.float32)
                    + generator.random_normal(tf.shape(x), 0.0, 1.0, dtype=tf.float32))

    x = tf.zeros([4, 3])
    a, b, other = Noise(7), Noise(7), Noise(8)
    first = a(x).numpy()
    assert first.shape == (4, 3) and np.std(first) > 0
    np.testing.assert_array_equal(first, b(x).numpy())  # same seed, same draws
    assert not np.array_equal(first, other(x).numpy())
    assert not np.array_equal(first, a(x).numpy())  # a stateful generator: new draws each call


def test_layer_output_in_picks_the_call_in_this_model():
    shared = keras.layers.Dense(2, activation="relu", name="shared")
    first_in, second_in = keras.Input((3,)), keras.Input((4,))
    first = keras.Model(first_in, shared(first_in))
    hidden = keras.layers.Dense(3)(second_in)
    second = keras.Model(second_in, shared(hidden))
    assert compat.layer_output_in(first, shared) is shared.get_output_at(0)
    out = compat.layer_output_in(second, shared)
    assert out is shared.get_output_at(1)
    probe = keras.Model(second.inputs, out)  # connected to the second model's input
    assert probe(np.ones((1, 4), "float32")).shape == (1, 2)


def test_image_data_generator_runs_identity_transforms_without_scipy():
    placeholder_set = compat.image_data_generator_without_scipy()
    generator_class = keras.preprocessing.image.ImageDataGenerator
    module = __import__(generator_class.__module__, fromlist=["x"])
    assert hasattr(module, "scipy")
    assert generator_class.apply_transform.__globals__ is vars(module)  # what the patch reaches
    assert isinstance(placeholder_set, bool)
    assert compat.image_data_generator_without_scipy() is False  # once set, nothing more to do
    images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 1)).astype("float32")
    batch = next(iter(generator_class(rescale=1.0 / 255).flow(images, batch_size=4,
                                                                shuffle=False)))
    np.testing.assert_allclose(batch, images / 255, rtol=1e-6)


def test_op_determinism_is_on_inside_the_block_and_off_after():
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    with compat.op_determinism(True):
        assert tf_config.is_op_determinism_enabled()
    assert not tf_config.is_op_determinism_enabled()
    with compat.op_determinism(False):
        assert not tf_config.is_op_determinism_enabled()


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_tensorboard_writes_the_steps_keras_writes_and_the_graph(tmp_path, steps_per_execution):
    x, y = _data(16)

    class StepHook(keras.callbacks.Callback):  # Keras calls step hooks only when one needs them
        def on_train_batch_end(self, batch, logs=None):
            pass

    def fit(callback_class, log_dir):
        model = _tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                      steps_per_execution=steps_per_execution)
        tensorboard = callback_class(str(log_dir), update_freq=4, write_graph=True,
                                     histogram_freq=1, profile_batch=0)
        model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[tensorboard, StepHook()])
        return read_events(str(log_dir / "train"))

    ours, theirs = fit(compat.TensorBoard, tmp_path / "ours"), fit(keras.callbacks.TensorBoard,
                                                                   tmp_path / "keras")
    assert sorted(ours["batch_loss"]) == sorted(theirs["batch_loss"]) == [4, 8, 12, 16]
    for step, value in theirs["batch_loss"].items():
        assert ours["batch_loss"][step] == pytest.approx(value)
    assert list(ours["epoch_loss"]) == [0, 1]
    # the weight histograms, through the overridden _log_weights (trainer.histograms)
    weights = {tag for tag in theirs if tag.endswith("/histogram")}
    assert weights and weights == {tag for tag in ours if tag.endswith("/histogram")}
    assert "_log_weights" in vars(keras.callbacks.TensorBoard)  # what compat overrides
    for tag in weights:
        assert sorted(ours[tag]) == sorted(theirs[tag]) == [0, 1]
        for step, rows in theirs[tag].items():
            np.testing.assert_array_equal(ours[tag][step][:, 2], rows[:, 2])
    graphs = [f for f in glob.glob(str(tmp_path / "ours" / "train" / "events.*"))
              if b"keras_model" in open(f, "rb").read() or b"graph_def" in open(f, "rb").read()]
    assert graphs, "no train graph written"


def test_backup_and_restore_resumes_after_its_own_step_backups(tmp_path):
    """Its per-step write of the step variable is gone; its own backups still resume right."""
    x, y = _data()

    class KillAtStep3(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                raise KeyboardInterrupt

    backup = compat.BackupAndRestore(str(tmp_path / "backup"), save_freq=3)
    with pytest.raises(KeyboardInterrupt):
        _tiny_model().fit(x, y, batch_size=2, epochs=2, verbose=0,
                          callbacks=[backup, KillAtStep3()])
    first = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: first.append(batch))
    _tiny_model(seed=1).fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1000), record])
    assert first[0] == 3  # backed up after step 2 (the third), resumed at step 3


def test_takes_tensor_logs_keeps_the_step_logs_tensors():
    """Without it Keras turns every step's logs into numpy (a host sync per step) as soon as
    one callback with a step hook lacks the mark, even when its class sets the attribute."""
    seen = []

    class StepHook(keras.callbacks.Callback):
        _supports_tf_logs = True  # shadowed by Callback.__init__: not enough

        def on_train_batch_end(self, batch, logs=None):
            seen.append(type(logs["loss"]))

    assert not compat.logs_stay_tensors([StepHook()])
    marked = compat.takes_tensor_logs(StepHook())
    assert compat.logs_stay_tensors([marked])
    x, y = _data(8)
    model = _tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[marked])
    assert seen and all(issubclass(kind, tf.Tensor) for kind in seen), seen


def test_load_model_builds_what_keras_load_model_builds(tmp_path):
    """The product's models (nested VGG16, custom layers, frozen and trainable layers), loaded
    from a .keras file both ways: the same config, weights and outputs; an archive with other
    files than config, metadata and weights goes through keras.models.load_model."""
    import zipfile  # pylint: disable=import-outside-toplevel

    from trainer import models  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(3)
    saved = models.build_model("model3", 32, 16, "none", augment="light")
    path = tmp_path / "model.keras"
    saved.save(path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == sorted(compat.KERAS_ARCHIVE_FILES)
    stock = keras.models.load_model(path, compile=False)
    loaded = compat.load_model(str(path))
    assert type(loaded) is type(stock) and loaded.optimizer is None
    assert loaded.get_config() == stock.get_config()
    assert [w.name for w in loaded.weights] == [w.name for w in saved.weights]
    assert [w.trainable for w in loaded.weights] == [w.trainable for w in stock.weights]
    for mine, theirs in zip(loaded.weights, saved.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.name)
    pages = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.predict(pages, verbose=0), stock.predict(pages, verbose=0))

    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("assets/readme.txt", "an asset")
    np.testing.assert_array_equal(compat.load_model(str(path)).predict(pages, verbose=0),
                                  stock.predict(pages, verbose=0))
