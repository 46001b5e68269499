"""trainer.schedule: warm-up, constant and cosine rates at given optimizer steps."""
import pytest
import tf_keras as keras

from trainer import compat
from trainer.schedule import WarmupThenDecay, learning_rate


def _rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_cosine_warms_up_linearly_then_decays_to_zero():
    schedule = WarmupThenDecay(1e-3, total_steps=104, warmup_steps=4, decay="cosine")
    assert _rates(schedule, [0, 1, 2, 3]) == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    # after the warm-up: half-way through the remaining 100 steps the cosine is at half the peak
    assert _rates(schedule, [4, 54, 104, 500]) == pytest.approx([1e-3, 5e-4, 0.0, 0.0], abs=1e-9)
    later = _rates(schedule, range(4, 105))
    assert all(a >= b for a, b in zip(later, later[1:]))


def test_constant_after_warm_up_and_plain_float_without_one():
    schedule = learning_rate(1e-5, "constant", warmup_steps=2, total_steps=10)
    assert _rates(schedule, [0, 1, 2, 9, 50]) == pytest.approx([5e-6, 1e-5, 1e-5, 1e-5, 1e-5])
    assert learning_rate(1e-5, "constant", warmup_steps=0, total_steps=10) == 1e-5
    no_warmup = learning_rate(2e-3, "cosine", warmup_steps=0, total_steps=10)
    assert _rates(no_warmup, [0, 5, 10]) == pytest.approx([2e-3, 1e-3, 0.0], abs=1e-9)


def test_round_trips_through_keras_serialization():
    schedule = WarmupThenDecay(3e-4, total_steps=50, warmup_steps=5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, WarmupThenDecay)
    assert _rates(restored, [0, 7, 30]) == pytest.approx(_rates(schedule, [0, 7, 30]))


def test_unknown_decay_is_refused():
    with pytest.raises(ValueError, match="decay must be one of"):
        WarmupThenDecay(1e-3, 10, decay="linear")


def test_is_keras_cosine_decay_and_survives_a_saved_optimizer(tmp_path):
    import numpy as np

    schedule = WarmupThenDecay(1e-2, total_steps=20, warmup_steps=3)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=2, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    rate = compat.learning_rate_setting(restored.optimizer)  # what LearningRateLogger reads
    assert isinstance(rate, WarmupThenDecay) and rate.get_config() == schedule.get_config()
    assert int(restored.optimizer.iterations) == 4
    assert float(rate(restored.optimizer.iterations)) == pytest.approx(float(schedule(4)))


def _old_formula(peak, total_steps, warmup_steps, decay, step):
    """The schedule as written before it became Keras's CosineDecay (float32, as it ran)."""
    import math

    import tensorflow as tf

    step = tf.cast(step, tf.float32)
    warming = peak * tf.minimum((step + 1.0) / float(max(warmup_steps, 1)), 1.0)
    if decay == "constant":
        after = tf.constant(peak)
    else:
        span = float(max(total_steps - warmup_steps, 1))
        progress = tf.clip_by_value((step - warmup_steps) / span, 0.0, 1.0)
        after = peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
    return float(tf.where(step < warmup_steps, warming, after))


@pytest.mark.parametrize("peak,total,warmup", [(1e-3, 104, 4), (1e-5, 10, 2), (2e-3, 10, 0),
                                                (3e-4, 300, 100), (1e-3, 5, 10), (1e-3, 1, 0)])
@pytest.mark.parametrize("decay", ["cosine", "constant"])
def test_every_step_equals_the_old_formula(peak, total, warmup, decay):
    schedule = WarmupThenDecay(peak, total, warmup, decay)
    steps = range(total + 20)
    assert _rates(schedule, steps) == [_old_formula(peak, total, warmup, decay, s) for s in steps]
