"""Distributed training: two logical CPU replicas (MirroredStrategy, in-process: conftest.py
splits the CPU) train like one device, and a two-process MultiWorkerMirroredStrategy cluster on
localhost (real processes) completes."""
import json
import shutil
import time

import numpy as np
import pytest

from trainer_fixtures import (base_args, clean_env, epochs_from_output, free_ports, scalars,
                              start_trainer, train_here, wait_for)
from trainer_fixtures import trainer_data  # noqa: F401  (session fixture)


@pytest.fixture(scope="module")
def replica_runs(trainer_data, tmp_path_factory):  # noqa: F811
    """Same seed, same global batch, deterministic: one device (image pipeline), two replicas
    (image pipeline) and two replicas with the feature cache."""
    tmp = tmp_path_factory.mktemp("replicas")
    same = ["--deterministic", "--seed=5", "--batch_size=16", "--shuffle_buffer=64",
            "--steps_per_epoch=4"]
    runs = {
        "one": base_args(trainer_data(32), tmp / "one", *same, "--nofeature_cache", epochs=2),
        "two": base_args(trainer_data(32), tmp / "two", *same, "--nofeature_cache",
                         "--cpu_replicas=2", epochs=2),
        "two_cached": base_args(trainer_data(32), tmp / "two_cached", *same, "--cpu_replicas=2",
                                epochs=2),
    }
    procs = [train_here(*args) for args in runs.values()]
    yield {name: (proc, tmp / name) for name, proc in zip(runs, procs)}
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("run", ["two", "two_cached"])
def test_two_cpu_replicas_train_like_one_device(replica_runs, run):
    one, one_dir = replica_runs["one"]
    two, two_dir = replica_runs[run]
    one.check(0)
    two.check(0)
    assert "global batch 16 over 1 replicas" in one.stderr
    assert "global batch 16 over 2 replicas" in two.stderr, two.tail()
    assert "MirroredStrategy" in two.stderr
    assert ("feature cache on" in two.stderr) == (run == "two_cached")
    a = [m for _, m in epochs_from_output(one.stdout)]
    b = [m for _, m in epochs_from_output(two.stdout)]
    assert len(a) == len(b) == 2
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert [m[key] for m in b] == pytest.approx([m[key] for m in a], rel=1e-3, abs=1e-3), key
    for split in ("train", "validation"):
        ea, eb = scalars(one_dir / "logs" / split, "epoch_loss"), scalars(two_dir / "logs" / split,
                                                                          "epoch_loss")
        assert [s for s, _ in ea] == [s for s, _ in eb] == [0, 1]
        assert [v for _, v in eb] == pytest.approx([v for _, v in ea], rel=1e-4)


def test_two_worker_cluster_on_localhost(trainer_data, tmp_path):  # noqa: F811
    """Two `trainer.main` processes with TF_CONFIG (MultiWorkerMirroredStrategy), the same
    --model_dir: both exit 0, the chief (worker 0) writes final.keras and the logs, the feature
    cache is off with the reason logged, and the gradient histograms (a collective) work."""
    from trainer import artifacts

    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    model_dir = tmp_path / "run"
    args = base_args(trainer_data(32), model_dir, "--steps_per_epoch=3", "--backup_every_steps=2",
                     "--histogram_freq=1", "--strategy=multi_worker", epochs=2)
    procs = []
    try:
        for index in range(2):
            env = clean_env(TF_CONFIG=json.dumps({"cluster": cluster,
                                                  "task": {"type": "worker", "index": index}}))
            procs.append(start_trainer(*args, env=env, log_dir=tmp_path / "logs"))
        # A worker that fails leaves the other waiting in a collective: give it a little time.
        deadline, failed_at = time.monotonic() + 240, None
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > 20:
                break
            time.sleep(0.1)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    finally:
        for proc in procs:
            proc.kill()
    chief, other = procs
    for proc in procs:
        proc.check(0)
        assert "MultiWorkerMirroredStrategy" in proc.stderr
        assert "global batch 16 over 2 replicas" in proc.stderr
        assert "feature cache off: multi-worker training" in proc.stderr, proc.tail()
        assert [e for e, _ in epochs_from_output(proc.stdout)] == [1, 2], proc.tail()
    # Both workers report the same (all-reduced) metrics; each times its own epochs.
    def metrics(proc):
        return [(e, {k: v for k, v in m.items() if k not in ("seconds", "images_per_second")})
                for e, m in epochs_from_output(proc.stdout)]
    assert metrics(chief) == metrics(other)
    assert all(m["seconds"] > 0 for _, m in epochs_from_output(chief.stdout))
    assert "final model:" in chief.stdout and "final model:" not in other.stdout
    assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == [
        "epoch-001.weights.h5", "epoch-002.weights.h5"]
    assert [s for s, _ in scalars(model_dir / "logs" / "train", "epoch_loss")] == [0, 1]
    assert scalars(model_dir / "logs" / "gradients", "gradients/global_norm")
    model = artifacts.load_model(str(model_dir))
    images = np.zeros((2, 32, 32, 1), np.uint8)
    assert model.predict(images, verbose=0).shape == (2, 16)


def test_a_killed_worker_stops_the_cluster_with_one_line_and_the_same_command_resumes(
        trainer_data, tmp_path):  # noqa: F811
    """kill -9 of worker 1 mid-training: worker 0 does not hang in a collective; it exits 4
    within a minute with one `error:` line naming worker 1 and the backup. Starting both
    workers again with the same command resumes after the last backed-up epoch."""
    model_dir = tmp_path / "run"
    args = base_args(trainer_data(32), model_dir, "--steps_per_epoch=10", "--strategy=multi_worker",
                     epochs=3, batch_size=8)

    def start_cluster():
        cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
        return [start_trainer(*args, log_dir=tmp_path / "logs", env=clean_env(TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}})))
                for index in range(2)]

    chief, other = start_cluster()
    try:
        wait_for(lambda: "Epoch 2/" in chief.stdout, 180, chief, "epoch 2")
        other.kill()
        chief.wait(timeout=60)
    finally:
        chief.kill()
        other.kill()
    chief.check(4)
    errors = [line for line in chief.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, chief.tail()
    assert "worker 1 of the cluster stopped" in errors[0]
    assert f"{model_dir}/backup is kept" in errors[0]
    assert "Traceback" not in chief.stderr

    procs = start_cluster()
    try:
        for proc in procs:
            proc.wait(timeout=180)
    finally:
        for proc in procs:
            proc.kill()
    for proc in procs:
        proc.check(0)
        assert "resumed at epoch 2" in proc.stderr, proc.tail()
        assert [e for e, _ in epochs_from_output(proc.stdout)] == [2, 3], proc.tail()
