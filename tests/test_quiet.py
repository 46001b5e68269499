"""Quiet by default (tfrecords_tool.quiet) and the training throughput (trainer.throughput)."""
import logging
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from tfrecords_tool import conversion, quiet
from trained_run import REPO, trained_run  # noqa: F401
from trainer import callbacks

CPP_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ", re.M)


@pytest.mark.parametrize("argv, level", [
    ([], 0), (["--verbosity=1"], 1), (["-v", "2"], 2), (["-v=1"], 1), (["--v", "-1"], -1),
    (["--data_dir=x", "--verbosity", "0"], 0), (["-v"], 0), (["--verbose=1"], 0)])
def test_verbosity_from_the_command_line(argv, level):
    assert quiet.verbosity(argv) == level


def test_configure_keeps_an_explicit_level_and_steps_aside_when_verbose():
    environ = {}
    quiet.configure([], environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "3"}
    environ = {"TF_CPP_MIN_LOG_LEVEL": "1"}
    quiet.configure([], environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "1"}
    environ = {}
    quiet.configure(["-v", "1"], environ)
    assert environ == {}


def test_tensorflow_info_through_absl_is_dropped_own_lines_kept():
    def record(path, level):
        return logging.LogRecord("absl", level, path, 1, "message", None, None)
    tf_module = os.path.join(os.path.dirname(tf.__file__), "python", "checkpoint", "saver.py")
    assert not quiet._not_tensorflow_info(record(tf_module, logging.INFO))
    assert quiet._not_tensorflow_info(record(tf_module, logging.WARNING))
    assert quiet._not_tensorflow_info(record(str(REPO / "trainer" / "main.py"), logging.INFO))


def test_a_tool_prints_no_tensorflow_start_up_lines_unless_asked(sample_dir, tmp_path):
    conversion.convert(output_dir=str(tmp_path), images_dir=str(sample_dir / "images"),
                       labels=str(sample_dir / "labels.txt"), image_size=16, num_shards=1,
                       workers=0)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def verify(*flags):
        return subprocess.run([sys.executable, "-m", "tfrecords_tool.verify",
                               f"--data_dir={tmp_path}", *flags], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
    quiet_run = verify()
    assert quiet_run.returncode == 0 and quiet_run.stdout.startswith("OK labels: 96 records")
    assert quiet_run.stderr == ""
    # TensorFlow's x86 builds always log their oneDNN / CPU-feature notices at start-up.
    assert CPP_LOG_LINE.search(verify("-v", "1").stderr)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_throughput_counts_training_steps_only():
    clock = _Clock()
    callback = callbacks.EpochTimer(global_batch_size=32, clock=clock)
    callback.set_params({"steps": 4})
    logs = {}
    callback.on_epoch_begin(0)
    clock.now += 2.0  # 4 training steps
    callback.on_test_begin()
    clock.now += 10.0  # validation: not training throughput
    callback.on_epoch_end(0, logs)
    assert logs["images_per_second"] == pytest.approx(4 * 32 / 2.0)
    assert logs["seconds"] == pytest.approx(12.0)


def test_training_writes_the_throughput_to_tensorboard(trained_run):  # noqa: F811
    values = []
    for path in tf.io.gfile.glob(str(trained_run.model_dir / "logs" / "train" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            values += [tf.make_ndarray(v.tensor) for v in event.summary.value
                       if v.tag == "epoch_images_per_second"]
    assert len(values) == 2 and all(value > 0 for value in values)  # 2 epochs
