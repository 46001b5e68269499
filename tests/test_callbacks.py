"""Tests for trainer.callbacks.

The GradientHistograms tests run training under a MirroredStrategy over the 2 logical CPU
devices conftest.py configures for the test session, in this process.
"""
import glob
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer import compat
from trainer.callbacks import ReferenceStopping


class _FakeModel:
    stop_training = False


def _run_rule(epoch_logs, **kwargs):
    """Feeds logs to ReferenceStopping; returns (1-based epoch it stopped after or None, cb)."""
    cb = ReferenceStopping(**kwargs)
    cb.set_model(_FakeModel())
    cb.on_train_begin()
    for epoch, logs in enumerate(epoch_logs):
        cb.on_epoch_end(epoch, logs)
        if cb.model.stop_training:
            return epoch + 1, cb
    return None, cb


def _logs(loss, val_loss, val_accuracy):
    return {"loss": loss, "val_loss": val_loss, "accuracy": 0.5, "val_accuracy": val_accuracy}


def test_reference_stopping_gap_rule():
    stopped, cb = _run_rule([_logs(1.0, 1.1, 0.5), _logs(0.8, 1.0, 0.6), _logs(0.6, 0.9, 0.7)])
    assert stopped == 3
    assert "val_loss - loss" in cb.stop_reason
    # configurable threshold
    assert _run_rule([_logs(0.6, 0.9, 0.7)], gap=0.5)[0] is None
    assert _run_rule([_logs(0.6, 0.9, 0.7)], gap=0.1)[0] == 1


def test_reference_stopping_accuracy_rule():
    accuracies = [0.50, 0.60, 0.55, 0.58, 0.54]  # 0.54 < 0.60, 0.55 and 0.58
    stopped, cb = _run_rule([_logs(1.0, 1.0, a) for a in accuracies])
    assert stopped == 5
    assert "val_accuracy" in cb.stop_reason


def test_reference_stopping_does_not_stop_otherwise():
    # gap exactly 0.25 is not "> 0.25"; each accuracy is >= at least one of the three before it.
    accuracies = [0.50, 0.60, 0.55, 0.58, 0.56, 0.55, 0.57, 0.55]
    logs = [_logs(1.0, 1.25, a) for a in accuracies]
    stopped, cb = _run_rule(logs)
    assert stopped is None and cb.stop_reason is None
    # fewer than three earlier epochs: a drop alone never stops
    assert _run_rule([_logs(1, 1, 0.9), _logs(1, 1, 0.5), _logs(1, 1, 0.1)])[0] is None
    # missing validation logs: nothing to check
    assert _run_rule([{"loss": 1.0}] * 6)[0] is None


def _read_events(log_dir):
    """{tag: {step: value}}: histograms as [k, 3] arrays, scalars as floats."""
    out = {}
    for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                out.setdefault(value.tag, {})[event.step] = (
                    array if array.ndim else float(array))
    return out


def _layer_stats(log_dir):
    """{statistic: {layer: {step: value}}} as the report reads them."""
    from trainer.reporting import read_layer_stats

    return read_layer_stats(os.path.join(log_dir, "gradients"))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_gradient_histograms_mirrored(tmp_path, policy):
    _train_with_histograms(policy, str(tmp_path))
    with open(tmp_path / "result.json") as f:
        info = json.load(f)
    assert info["replicas"] == 2
    events = _read_events(str(tmp_path / "logs" / "gradients"))
    # weights: the TensorBoard callback's histogram_freq, as trainer.training passes it
    events.update({f"weights/{tag[:-len('_0/histogram')]}": steps for tag, steps
                   in _read_events(str(tmp_path / "logs" / "train")).items()
                   if tag.endswith("_0/histogram")})
    # model3: 4 fine-tuned VGG convs + conv_fc1 + conv_fc2 + predictions, kernel and bias each
    assert len(info["variables"]) == 14
    assert "block5_conv1/kernel" in info["variables"] and "conv_fc1/kernel" in info["variables"]
    for name in info["variables"]:
        for kind in ("gradients", "weights"):
            steps = events[f"{kind}/{name}"]
            assert sorted(steps) == [0, 1]  # freq=1, two epochs
            for histogram in steps.values():
                assert histogram.shape[1] == 3 and np.all(np.isfinite(histogram))
                assert histogram[:, 2].sum() > 0  # bucket counts
    norms = events["gradients/global_norm"]
    assert sorted(norms) == [0, 1]
    assert all(math.isfinite(n) and n > 0 for n in norms.values())
    # summed over the 2 replicas = gradient of the mean loss over the whole batch
    rtol = 1e-4 if policy == "float32" else 5e-2
    assert norms[1] == pytest.approx(info["reference_norm"], rel=rtol)

    # per-layer statistics: every trainable layer, and together they make the global norm
    stats = _layer_stats(str(tmp_path / "logs"))
    layers = {name.rsplit("/", 1)[0] for name in info["variables"]}
    assert {layer.rsplit("/", 1)[-1] for layer in stats["gradient_norm"]} == layers
    assert "vgg16/block5_conv1" in stats["gradient_norm"]  # nested layers under their model
    for statistic in ("gradient_norm", "weight_norm", "update_ratio"):
        assert all(sorted(s) == [0, 1] and all(math.isfinite(v) and v > 0 for v in s.values())
                   for s in stats[statistic].values()), statistic
    for step in (0, 1):
        layer_total = math.sqrt(sum(s[step] ** 2 for s in stats["gradient_norm"].values()))
        assert layer_total == pytest.approx(norms[step], rel=1e-4)
    assert set(stats["dead_units"]) == {"conv_fc1", "conv_fc2"}  # the head's ReLU layers
    assert all(0 <= v <= 1 for s in stats["dead_units"].values() for v in s.values())


# The tiny model: x (2 features) -> hidden Dense(2, relu) -> out Dense(1), mean squared error,
# plain SGD, one full batch of 4 examples per step. Unit 2 of `hidden` has a bias so negative
# that it is zero for every example (dead), unit 1 is active for every example.
_X = np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0], [1.5, 1.0]])
_Y = np.array([[1.0], [0.0], [2.0], [1.0]])
_W0 = [np.array([[0.5, 0.1], [0.2, -0.3]]), np.array([1.0, -10.0]),
       np.array([[0.7], [0.4]]), np.array([0.1])]
_LR = 0.05


def _tiny_gradients(w):
    """By hand: the mean squared error's gradient for the tiny model at weights `w`."""
    w1, b1, w2, b2 = w
    pre = _X @ w1 + b1
    h = np.maximum(pre, 0)
    d = 2 * (h @ w2 + b2 - _Y) / len(_X)
    dh = d @ w2.T * (pre > 0)
    return [_X.T @ dh, dh.sum(0), h.T @ d, d.sum(0)], pre


def _norm(arrays):
    return math.sqrt(sum(float(np.sum(np.square(a))) for a in arrays))


def test_layer_statistics_by_hand_and_on_two_replicas(tmp_path):
    for replicas in (1, 2):
        _train_tiny(str(tmp_path / str(replicas)), replicas)
    one, two = (_layer_stats(str(tmp_path / str(r) / "logs")) for r in (1, 2))

    weights, epochs = [w.copy() for w in _W0], 2  # one step per epoch
    for epoch in range(epochs):
        grads, _ = _tiny_gradients(weights)
        before, weights = weights, [w - _LR * g for w, g in zip(weights, grads)]
        grads, pre = _tiny_gradients(weights)  # what the callback sees at the epoch's end
        for layer, ids in (("hidden", [0, 1]), ("out", [2, 3])):
            expected = {
                "gradient_norm": _norm([grads[i] for i in ids]),
                "weight_norm": _norm([weights[i] for i in ids]),
                "update_ratio": _norm([weights[i] - before[i] for i in ids])
                / _norm([before[i] for i in ids]),
            }
            for statistic, value in expected.items():
                assert value > 0
                assert one[statistic][layer][epoch] == pytest.approx(value, rel=1e-5), (
                    statistic, layer, epoch)
        assert np.all(pre[:, 1] < 0) and np.all(pre[:, 0] > 0)  # as designed: 1 of 2 dead
        assert one["dead_units"]["hidden"][epoch] == 0.5
    assert set(one["dead_units"]) == {"hidden"}  # `out` is linear

    assert two.keys() == one.keys()
    for statistic, layers in one.items():
        assert two[statistic].keys() == layers.keys()
        for layer, values in layers.items():
            assert sorted(values) == list(range(epochs))
            for step, value in values.items():
                assert two[statistic][layer][step] == pytest.approx(value, rel=1e-5)


def _train_with_histograms(policy, out_dir):
    """model3 (two optimizers) trained for 2 epochs on 2 CPU replicas under `policy`; writes
    result.json with what the test compares."""
    import tf_keras as keras

    from trainer.distribute import precision_policy

    with precision_policy(policy):
        _model3_with_histograms(out_dir)
    keras.backend.clear_session()


def _model3_with_histograms(out_dir):
    import tf_keras as keras

    from trainer.callbacks import GradientHistograms
    from trainer.models import build_model, compile_model

    keras.utils.set_random_seed(0)
    from trainer.distribute import make_strategy

    strategy = make_strategy("mirrored", cpu_replicas=2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
    labels = rng.integers(0, 16, (16,))
    with strategy.scope():
        model = build_model("model3", image_size=32, weights="none")
        compile_model(model, keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-5))
    callback = GradientHistograms(os.path.join(out_dir, "logs"), (images[:8], labels[:8]),
                                  strategy, freq=1, is_chief=True)
    tensorboard = compat.TensorBoard(os.path.join(out_dir, "logs"), histogram_freq=1,
                                     write_graph=False, profile_batch=0)
    model.fit(images, labels, batch_size=8, epochs=2, callbacks=[callback, tensorboard],
              verbose=0)
    # the same gradient without distribution (weights are those of the last on_epoch_end)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels[:8], model(images[:8]))
        loss = tf.reduce_mean(loss)
    reference_norm = tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync,
                   "reference_norm": float(reference_norm),
                   "variables": [v.name.split(":")[0] for v in model.trainable_variables]}, f)


def _train_tiny(out_dir, replicas):
    """The tiny model trained for 2 epochs of one step on `replicas` CPUs."""
    import tf_keras as keras

    from trainer.callbacks import GradientHistograms
    from trainer.distribute import make_strategy

    strategy = make_strategy("auto", cpu_replicas=replicas)
    assert strategy.num_replicas_in_sync == replicas
    with strategy.scope():
        inputs = keras.Input((2,))
        hidden = keras.layers.Dense(2, activation="relu", name="hidden")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
        model.set_weights(_W0)
        model.compile(keras.optimizers.SGD(_LR), loss="mse")
    x, y = _X.astype(np.float32), _Y.astype(np.float32)
    callback = GradientHistograms(os.path.join(out_dir, "logs"), (x, y), strategy)
    model.fit(x, y, batch_size=len(x), epochs=2, shuffle=False, callbacks=[callback], verbose=0)

