"""The training loop's host work (issue: loop overhead): no slow-callback warning on a
demo-size cached run, step-level writes at the same steps whatever --steps_per_execution, and
settings that cannot work refused before training. In-process (`train_here`), except one
run in a fresh process, where a process's first-time costs show."""
import pytest

from trainer.reporting import read_events
from trainer_fixtures import base_args, run_trainer, train_here
from trainer_fixtures import trainer_data  # noqa: F401  (session fixture)

SLOW = "slow compared to the batch time"


@pytest.mark.parametrize("extra, per_execution, process", [
    ([], 2, False), (["--steps_per_execution=1"], 1, True)])
def test_demo_size_cached_run_has_no_slow_callback(trainer_data, tmp_path, extra,  # noqa: F811
                                                   per_execution, process):
    """configs/sample_demo.cfg's settings (histograms every epoch, scalars every few steps) on
    model1's cached head at 128 px, the README demo's first run; Keras times the step hooks
    over the first 5 calls and warns when they cost more than the steps. Once in a fresh
    process: a process's first summary write costs ~80 ms (TensorBoard's summary module is
    imported then), which an in-process run has long paid."""
    model_dir = tmp_path / "run"
    args = base_args(trainer_data(128), model_dir, "--histogram_freq=1", "--log_every_steps=2",
                     *extra, model="model1", epochs=3, batch_size=12)
    run = run_trainer(*args) if process else train_here(*args)
    assert run.returncode == 0, run.tail()
    assert "feature cache on" in run.stderr
    assert f"{per_execution} steps per execution, XLA off" in run.stderr  # the defaults on CPU
    assert SLOW not in run.stderr, run.tail()
    steps = read_events(str(model_dir / "logs" / "train"))
    # 72 training pages, batch 12: 6 steps an epoch, 18 in all; written every 2 steps
    assert sorted(steps["batch_loss"]) == list(range(2, 19, 2))
    assert sorted(steps["batch_learning_rate"]) == list(range(0, 19, 2))  # and at the start


def test_steps_per_execution_must_divide_the_step_intervals(trainer_data, tmp_path):  # noqa: F811
    run = train_here(*base_args(trainer_data(32), tmp_path / "run", "--steps_per_execution=4",
                                "--log_every_steps=6"))
    assert run.returncode == 2
    assert "--log_every_steps=6 is not a multiple of --steps_per_execution=4" in run.stderr


def test_xla_on_and_off_give_the_same_losses():
    """model2 as `train` compiles it, the same weights and batches, with and without XLA."""
    import numpy as np
    import tf_keras as keras

    from trainer import training

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 1), dtype=np.uint8)
    labels = rng.integers(0, 16, 48)
    losses = {}
    for jit in ("on", "off"):
        config = training.TrainConfig(model="model2", weights="none", jit_compile=jit)
        keras.utils.set_random_seed(0)
        model = training.compiled_model(config, 32, 16, total_steps=6)
        history = model.fit(images, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
        losses[jit] = history.history["loss"]
        assert model._jit_compile == (jit == "on")  # pylint: disable=protected-access
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-4)
    assert losses["on"][1] != losses["on"][0]  # it trained


def test_xla_with_deterministic_ops_is_refused_and_auto_leaves_it_off(trainer_data,  # noqa: F811
                                                                      tmp_path):
    """XLA has no deterministic MaxPool gradient: TensorFlow fails at the first step."""
    from trainer import training

    run = train_here(*base_args(trainer_data(32), tmp_path / "run", "--deterministic",
                                "--jit_compile=on"))
    assert run.returncode == 2
    assert "--jit_compile=on cannot run with --deterministic" in run.stderr
    assert not training.jit_compile(training.TrainConfig(deterministic=True))


@pytest.mark.parametrize("model_name, cached_head", [("model2", True), ("model3", False)])
def test_the_products_callbacks_take_the_step_logs_as_tensors(tmp_path, model_name, cached_head):
    """Every callback `train` fits with (histograms, augmented images, backups, ...) leaves the
    step logs tensors: no host sync per step."""
    import tensorflow as tf

    from trainer import compat, training

    config = training.TrainConfig(model=model_name, weights="none", model_dir=str(tmp_path),
                                  log_augmented_images=2,
                                  augment="none" if cached_head else "light")
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = training.compiled_model(config, 32, 16, total_steps=10)
    fitted = (training.compiled_head(config, strategy, model, 10, 5)[1] if cached_head
              else model)
    inputs = tf.zeros([4, *fitted.input_shape[1:]], fitted.inputs[0].dtype)
    batches = tf.data.Dataset.from_tensors((inputs, tf.zeros([4], tf.int32)))
    callback_list = training.fit_callbacks(config, strategy, model, fitted, batches, chief=True,
                                           steps_per_epoch=5)
    assert compat.logs_stay_tensors(callback_list)
