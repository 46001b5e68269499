"""Tests for trainer.callbacks.

The GradientHistograms test runs training under a MirroredStrategy over 2 logical CPU devices,
which must be configured before TensorFlow initialises its devices: it runs this file as a
script in a subprocess (see `_train_with_histograms` at the bottom).
"""
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from trainer.callbacks import ReferenceStopping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_gradient_histograms_mirrored(tmp_path, policy):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), policy, str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(tmp_path / "result.json") as f:
        info = json.load(f)
    assert info["replicas"] == 2
    events = _read_events(str(tmp_path / "logs" / "gradients"))
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


def _train_with_histograms(policy, out_dir):
    """Subprocess body: model3 (two optimizers) trained for 2 epochs on 2 CPU replicas."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_keras as keras

    from trainer.callbacks import GradientHistograms
    from trainer.models import build_model, compile_model

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
    labels = rng.integers(0, 16, (16,))
    with strategy.scope():
        model = build_model("model3", image_size=32, weights="none")
        compile_model(model, keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-5))
    callback = GradientHistograms(os.path.join(out_dir, "logs"), (images[:8], labels[:8]),
                                  strategy, freq=1, is_chief=True)
    model.fit(images, labels, batch_size=8, epochs=2, callbacks=[callback], verbose=0)
    # the same gradient without distribution (weights are those of the last on_epoch_end)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels[:8], model(images[:8]))
        loss = tf.reduce_mean(loss)
    reference_norm = tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync,
                   "reference_norm": float(reference_norm),
                   "variables": [v.name.split(":")[0] for v in model.trainable_variables]}, f)


if __name__ == "__main__":
    _train_with_histograms(sys.argv[1], sys.argv[2])
