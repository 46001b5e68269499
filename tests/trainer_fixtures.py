"""Shared helpers for the trainer's process-level tests (test_trainer_cli, test_distributed,
test_trainer_resume): a generated sample converted at the sizes a test asks for, trainer
processes with timeouts (started one by one or several at once), and readers for the trainer's
verbose output and TensorBoard event files.

Every process gets a timeout and is killed (with its process group) when a test gives up on it.
"""
import atexit
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES_PER_CLASS = 12      # 192 pages: 144 train / 48 val with --val_fraction=0.25
DEFAULT_TIMEOUT = 240

_EPOCH_LINE = re.compile(r"^(\d+)/(\d+) - \S+ - (.*)$")
_METRIC = re.compile(r"(\w+): (-?(?:nan|inf|[0-9.]+(?:e[-+]?\d+)?))")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _default_log_dir():
    if not _LOG_DIRS:
        _LOG_DIRS.append(tempfile.mkdtemp(prefix="trainer-test-logs-"))
        atexit.register(shutil.rmtree, _LOG_DIRS[0], True)
    return _LOG_DIRS[0]


_LOG_DIRS = []


class _Outcome:
    """What a test reads of a tool run: .args, .returncode, .stdout, .stderr."""

    @property
    def output(self):
        return self.stdout + self.stderr

    def tail(self, n=4000):
        return f"--- stdout ---\n{self.stdout[-n:]}\n--- stderr ---\n{self.stderr[-n:]}"

    def check(self, returncode=0):
        assert self.returncode == returncode, (
            f"exit {self.returncode}, expected {returncode}: {' '.join(self.args)}\n{self.tail()}")
        return self


class Proc(_Outcome):
    """A `python -m module args...` child in its own process group; output goes to files."""

    def __init__(self, module, args, env=None, log_dir=None):
        self.args = [sys.executable, "-m", module, *map(str, args)]
        log_dir = Path(log_dir or _default_log_dir())
        log_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{module}-", suffix=".log", dir=log_dir)
        os.close(fd)
        self.stdout_path, self.stderr_path = Path(name + ".out"), Path(name + ".err")
        self._out = open(self.stdout_path, "w")
        self._err = open(self.stderr_path, "w")
        self.popen = subprocess.Popen(self.args, cwd=REPO, env=env or clean_env(),
                                      stdout=self._out, stderr=self._err, start_new_session=True)
        self.returncode = None

    @property
    def pid(self):
        return self.popen.pid

    @property
    def stdout(self):
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def poll(self):
        self.returncode = self.popen.poll()
        return self.returncode

    def wait(self, timeout=DEFAULT_TIMEOUT):
        """Waits; on timeout kills the process group and fails the test with the output."""
        try:
            self.returncode = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"timed out after {timeout} s: {' '.join(self.args)}\n{self.tail()}")
        finally:
            self._close()
        return self

    def signal(self, signum):
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def kill(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=30)
        self.returncode = self.popen.returncode
        self._close()

    def _close(self):
        for f in (self._out, self._err):
            if not f.closed:
                f.close()


class InProcessRun(_Outcome):
    """A trainer.main command line run by `training.train` in this process: the same flags, and
    the returncode, stdout (Keras' epoch lines, the summary) and stderr (the log lines, the
    `error:` line) a Proc of `python -m trainer.main` has."""

    def __init__(self, args, returncode, stdout, stderr, result):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr
        self.result = result  # the TrainResult (None when train raised)


def train_here(*args):
    """Runs `python -m trainer.main args...` in this process (absl flag parsing, the library's
    exit statuses); returns an InProcessRun. For tests where no process boundary is under test."""
    import contextlib
    import io
    import logging as python_logging

    import tf_keras as keras
    from absl import flags
    from absl import logging

    from tfrecords_tool import cli
    from trainer import training

    args = [str(a) for a in args]
    flag_values = flags.FlagValues()
    cli.define_flags(training.TrainConfig, flag_values)
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = python_logging.StreamHandler(stderr)
    absl_logger = python_logging.getLogger("absl")
    absl_logger.addHandler(handler)
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.INFO)
    results = []

    def run():
        try:
            flag_values(["trainer.main", *args])
        except flags.Error as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        results.append(training.train(cli.from_flags(training.TrainConfig, flag_values)))
        print(results[0].summary())

    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = cli.call(run)
    finally:
        absl_logger.removeHandler(handler)
        logging.set_verbosity(verbosity)
        keras.backend.clear_session()
    return InProcessRun(["trainer.main", *args], status, stdout.getvalue(), stderr.getvalue(),
                        results[0] if results else None)


def start_trainer(*args, env=None, log_dir=None):
    """Starts `python -m trainer.main args...`; returns the Proc (call .wait())."""
    return Proc("trainer.main", args, env=env, log_dir=log_dir)


def run_trainer(*args, timeout=DEFAULT_TIMEOUT, env=None, log_dir=None):
    return start_trainer(*args, env=env, log_dir=log_dir).wait(timeout)


def run_all(arg_lists, timeout=DEFAULT_TIMEOUT, parallel=3, env=None, log_dir=None):
    """Runs `trainer.main` once per argument list, at most `parallel` at a time; returns the
    finished Procs in the same order. All are killed if one times out."""
    pending, running, done = list(enumerate(arg_lists)), [], {}
    deadline = time.monotonic() + timeout
    try:
        while pending or running:
            while pending and len(running) < parallel:
                i, args = pending.pop(0)
                running.append((i, start_trainer(*args, env=env, log_dir=log_dir)))
            for i, proc in list(running):
                if proc.poll() is not None:
                    done[i] = proc.wait(timeout=10)
                    running.remove((i, proc))
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s: "
                            + "; ".join(" ".join(p.args) for _, p in running))
            time.sleep(0.05)
    finally:
        for _, proc in running:
            proc.kill()
    return [done[i] for i in range(len(arg_lists))]


def wait_for(predicate, timeout, proc=None, what="condition", poll=0.02):
    """Polls `predicate` until true; fails (killing `proc`) on timeout or when `proc` exits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}) before {what}\n{proc.tail()}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            pytest.fail(f"no {what} after {timeout} s" + (f"\n{proc.tail()}" if proc else ""))
        time.sleep(poll)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------------------------------------
# Reading what the trainer wrote.
# ------------------------------------------------------------------------------------------

def epochs_from_output(text):
    """The verbose=2 epoch lines: [(epoch number, {metric: value})] in order of appearance.
    `Epoch k/N` headers give the number; a metric line follows its header."""
    epochs, current = [], None
    for line in text.splitlines():
        header = re.match(r"^Epoch (\d+)/(\d+)$", line.strip())
        if header:
            current = int(header.group(1))
            continue
        match = _EPOCH_LINE.match(line.strip())
        if match and current is not None:
            metrics = {k: float(v) for k, v in _METRIC.findall(match.group(3))}
            if "loss" in metrics:
                epochs.append((current, metrics))
    return epochs


def epoch_headers(text):
    return [int(m) for m in re.findall(r"^Epoch (\d+)/\d+$", text, flags=re.M)]


def read_events(event_dir):
    """{tag: [(step, value ndarray, plugin)]} over every event file in `event_dir`."""
    import tensorflow as tf

    out = {}
    for path in sorted(glob.glob(os.path.join(event_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if not value.HasField("tensor"):
                    continue
                out.setdefault(value.tag, []).append(
                    (event.step, tf.make_ndarray(value.tensor),
                     value.metadata.plugin_data.plugin_name))
    return out


def scalars(event_dir, tag):
    """[(step, float)] of a scalar tag in file order."""
    return [(step, float(np.asarray(v).reshape(()))) for step, v, _ in
            read_events(event_dir).get(tag, [])]


SIZES = (32, 64, 128)
SMALL_SIZES = (128,)  # converted from half the pages (6 per class): model1's VGG16 at 128 px


@pytest.fixture(scope="session")
def trainer_data(tmp_path_factory):
    """`trainer_data(size)` -> data dir with `train` and `val` splits (75/25, two shards each)
    of a generated 16-class sample at size x size: 144/48 pages at 32 and 64 px, 72/24 pages at
    128 px. All sizes are converted on first use, once per session. `.sample` is the sample's
    root."""
    from tfrecords_tool import sample
    from tfrecords_tool.conversion import convert

    root = tmp_path_factory.mktemp("trainer_data")
    sample.generate(root / "sample", pages_per_class=PAGES_PER_CLASS, seed=0, max_side=400)
    lines = (root / "sample" / "labels.txt").read_text().splitlines()
    small = [line for line in lines if int(line.rsplit("_", 1)[1].split(".")[0]) < PAGES_PER_CLASS // 2]
    assert len(small) == len(lines) // 2
    (root / "sample" / "labels_small.txt").write_text("\n".join(small) + "\n")
    for size in SIZES:
        convert(labels=str(root / "sample" / ("labels_small.txt" if size in SMALL_SIZES
                                              else "labels.txt")),
                images_dir=str(root / "sample" / "images"), output_dir=str(root / f"data{size}"),
                image_size=size, val_fraction=0.25, num_shards=2, workers=0)

    def get(size):
        assert size in SIZES, size
        return root / f"data{size}"

    get.sample = root / "sample"
    get.root = root
    return get


def base_args(data_dir, model_dir, *extra, model="model2", epochs=2, batch_size=16):
    """A small, quiet run: random VGG16 weights, no histograms unless asked."""
    args = [f"--model={model}", "--weights=none", f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", f"--epochs={epochs}", f"--batch_size={batch_size}",
            "--histogram_freq=0"]
    return args + list(extra)


def namespace(**kwargs):
    return types.SimpleNamespace(**kwargs)
