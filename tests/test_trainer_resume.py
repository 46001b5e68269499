"""Reliability of `python -m trainer.main`: kill -9 and SIGTERM on real processes, then the same
command resumes; damaged shards, NaN losses and finished runs (in-process, `train_here`) give
clear outcomes."""
import collections
import shutil
import signal
import time

import h5py
import numpy as np
import pytest

from trainer_fixtures import (base_args, epoch_headers, epochs_from_output, scalars,
                              start_trainer, train_here, wait_for)
from trainer_fixtures import trainer_data  # noqa: F401  (session fixture)

EPOCHS = 3
STEPS = 8  # per epoch; about 0.1 s each at 32 px without the feature cache
BACKUP_EVERY = 4


def _resumable_args(data_dir, model_dir, *extra):
    """Image pipeline (a step takes a while, so a signal lands mid-epoch), step backups."""
    return base_args(data_dir, model_dir, "--nofeature_cache", f"--steps_per_epoch={STEPS}",
                     f"--backup_every_steps={BACKUP_EVERY}", *extra, epochs=EPOCHS)


def _checkpoint(model_dir, epoch):
    return model_dir / "checkpoints" / f"epoch-{epoch:03d}.weights.h5"


def _stamp(path):
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _backup_index(model_dir):
    """The file BackupAndRestore rewrites at every backup."""
    return model_dir / "backup" / "chief" / "checkpoint"


def _loadable(path):
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
    return len(names) > 0


def _epoch_steps_once(model_dir, epochs=EPOCHS):
    """TensorBoard has each epoch's train/validation scalars exactly once over all event files."""
    for split in ("train", "validation"):
        steps = [s for s, _ in scalars(model_dir / "logs" / split, "epoch_loss")]
        counts = collections.Counter(steps)
        assert sorted(counts) == list(range(epochs)), (split, steps)
        assert set(counts.values()) == {1}, (split, steps)


def _finished(proc, model_dir):
    proc.check(0)
    assert (model_dir / "final.keras").exists()
    for epoch in range(1, EPOCHS + 1):
        assert _loadable(_checkpoint(model_dir, epoch)), epoch
    assert not list((model_dir / "checkpoints").glob(".tmp-*"))


def test_kill9_mid_epoch_then_the_same_command_resumes(trainer_data, tmp_path):  # noqa: F811
    model_dir = tmp_path / "run"
    args = _resumable_args(trainer_data(32), model_dir)
    proc = start_trainer(*args, log_dir=tmp_path / "logs")
    try:
        # "Epoch 3/3" is printed when epoch 3 begins, after epoch 2's end-of-epoch backup; the
        # next change of the backup is the step backup inside epoch 3.
        wait_for(lambda: f"Epoch 3/{EPOCHS}" in proc.stdout, 180, proc, "epoch 3")
        index = _backup_index(model_dir)
        seen = _stamp(index)
        wait_for(lambda: _stamp(index) != seen, 60, proc, f"step {BACKUP_EVERY} backup of epoch 3")
        proc.signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (model_dir / "final.keras").exists()
    assert not _checkpoint(model_dir, 3).exists(), "killed too late: epoch 3 had finished"
    before = {e: _stamp(_checkpoint(model_dir, e)) for e in (1, 2)}

    again = train_here(*args)  # the rerun: in-process (no process boundary under test)
    _finished(again, model_dir)
    assert epoch_headers(again.stdout) == [3], again.tail()   # not from epoch 1
    assert [e for e, _ in epochs_from_output(again.stdout)] == [3]
    assert {e: _stamp(_checkpoint(model_dir, e)) for e in (1, 2)} == before  # not rewritten
    _epoch_steps_once(model_dir)


def test_kill9_while_saving_an_epoch_leaves_no_broken_checkpoint(trainer_data, tmp_path):  # noqa: F811
    """Killed right when epoch 2's checkpoint is being written: every checkpoint file there is
    complete, and the rerun writes epoch 2's checkpoint (the epoch end is not skipped).
    The rerun also changes --learning_rate: the resumed optimizer uses the new one (not the
    one in the backup), as when rerunning with a lower rate after a NaN."""
    model_dir = tmp_path / "run"
    args = _resumable_args(trainer_data(32), model_dir, "--learning_rate=1e-3")
    proc = start_trainer(*args, log_dir=tmp_path / "logs")
    try:
        wait_for(lambda: any((model_dir / "checkpoints").glob("*epoch-002*")), 180, proc,
                 "epoch 2 checkpoint being written", poll=0.002)
        proc.signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    for path in (model_dir / "checkpoints").glob("epoch-*.weights.h5"):
        assert _loadable(path), path
    again = train_here(*args, "--learning_rate=2e-3")
    _finished(again, model_dir)
    resumed_at = epoch_headers(again.stdout)[0]
    assert resumed_at in (2, 3), again.tail()
    rates = dict(scalars(model_dir / "logs" / "train", "epoch_learning_rate"))
    assert rates[0] == pytest.approx(1e-3)
    assert [rates[e] for e in range(resumed_at - 1, EPOCHS)] == pytest.approx(
        [2e-3] * (EPOCHS - resumed_at + 1)), rates
    assert "learning rate 0.002 (the resumed state had 0.001)" in again.stderr


def test_sigterm_saves_state_exits_143_and_resumes(trainer_data, tmp_path):  # noqa: F811
    model_dir = tmp_path / "run"
    args = _resumable_args(trainer_data(32), model_dir)
    proc = start_trainer(*args, log_dir=tmp_path / "logs")
    try:
        wait_for(lambda: "Epoch 2/" in proc.stdout, 180, proc, "epoch 2")
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        proc.wait(60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 143, proc.tail()
    assert took < 20, took
    assert "state saved" in proc.stderr and "run the same command again" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.tail()
    assert not (model_dir / "final.keras").exists()
    epoch_one = _stamp(_checkpoint(model_dir, 1))

    again = train_here(*args)  # the rerun: in-process (no process boundary under test)
    _finished(again, model_dir)
    assert epoch_headers(again.stdout)[0] >= 2, again.tail()
    assert _stamp(_checkpoint(model_dir, 1)) == epoch_one
    _epoch_steps_once(model_dir)


@pytest.mark.parametrize("cache", ["feature_cache", "nofeature_cache"])
def test_damaged_shard_is_named_in_a_clear_error(trainer_data, tmp_path, cache):  # noqa: F811
    data_dir = tmp_path / "data"
    # Without the shared feature cache of earlier runs: a complete cache is never re-read.
    shutil.copytree(trainer_data(32), data_dir, ignore=shutil.ignore_patterns("feature_cache"))
    shard = data_dir / "train-00001-of-00002.tfrecord"
    damaged = bytearray(shard.read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(b ^ 0xFF for b in damaged[middle:middle + 64])
    shard.write_bytes(bytes(damaged))

    proc = train_here(*base_args(data_dir, tmp_path / "run", f"--{cache}", epochs=2))
    assert proc.returncode == 2, proc.tail()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.tail()
    assert str(shard) in errors[0] and "corrupted record" in errors[0], errors
    assert "Traceback" not in proc.stderr, proc.tail()
    assert not (tmp_path / "run" / "final.keras").exists()


# ------------------------------------------------------------------------------------------
# A finished run: rerun, load, NaN.
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(trainer_data, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("finished")
    args = base_args(trainer_data(32), root / "run", epochs=2)
    train_here(*args).check(0)
    return root / "run", args, trainer_data(32)


def _stamps(model_dir):
    """Size and mtime of the checkpoints, best and final models."""
    paths = [*model_dir.glob("checkpoints/*"), *model_dir.glob("best.*"), model_dir / "final.keras"]
    return {p.relative_to(model_dir): _stamp(p) for p in paths if p.is_file()}


def test_rerun_after_completion_says_finished_and_does_not_train(finished_run):
    model_dir, args, _ = finished_run
    before = _stamps(model_dir)
    proc = train_here(*args).check(0)
    assert "training already finished" in proc.stdout and "final.keras" in proc.stdout
    assert "Epoch" not in proc.stdout
    assert _stamps(model_dir) == before


def test_final_model_loads_in_safe_mode(finished_run):
    import tf_keras as keras
    import trainer.models  # noqa: F401  (registers the custom layers)

    model_dir, _, _ = finished_run
    model = keras.models.load_model(model_dir / "final.keras", safe_mode=True)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    probs = model.predict(images, verbose=0)
    assert probs.shape == (3, 16)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("how", [
    # NaN within the first steps of an epoch.
    ["--learning_rate=1e30"],
    # NaN made by the last step of an epoch: the loss printed for it is still finite.
    ["--learning_rate=1e30", "--optimizer=sgd", "--steps_per_epoch=1"],
])
def test_nan_loss_stops_with_exit_3_and_keeps_the_checkpoints(finished_run, tmp_path, how):
    model_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], model_dir)
    before = _stamps(model_dir)
    args = base_args(finished_run[2], model_dir, "--overwrite", *how, epochs=2)
    proc = train_here(*args)
    assert proc.returncode == 3, proc.tail()
    assert "error:" in proc.stderr and ("nan" in proc.stderr or "non-finite" in proc.stderr)
    assert "Traceback" not in proc.stderr, proc.tail()
    after = _stamps(model_dir)
    for path, stamp in before.items():  # checkpoints, best and final models untouched
        assert after.get(path) == stamp, path
    assert sorted(after) == sorted(before), "a checkpoint was written after the NaN"
    assert {"checkpoints/epoch-001.weights.h5", "final.keras"} <= {str(p) for p in before}


def test_a_resumed_run_replays_finished_epochs_into_the_stopping_rules(tmp_path):
    """The reference rule needs the three val_accuracies before the latest one; after a resume
    at epoch 4 they come from history.json, so epoch 4's drop still stops training."""
    import json

    import tf_keras as keras

    from trainer import callbacks, checkpointing

    history = tmp_path / "history.json"
    history.write_text(json.dumps({str(e): {"loss": 1.0, "val_loss": 1.0, "val_accuracy": acc}
                                   for e, acc in enumerate([0.5, 0.6, 0.7, 0.9])}))
    rule = callbacks.ReferenceStopping()
    replay = checkpointing.EpochHistory(str(history), [rule], chief=True)
    model = keras.Sequential([keras.layers.Dense(1)])
    for callback in (rule, replay):
        callback.set_model(model)
        callback.on_train_begin()
    replay.on_epoch_begin(3)  # resumed at epoch index 3: epochs 0-2 are replayed, 3 is dropped
    assert rule.val_accuracies == [0.5, 0.6, 0.7] and not model.stop_training
    rule.on_epoch_end(3, {"loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.4})
    replay.on_epoch_end(3, {"loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.4})
    assert model.stop_training and "lower than each of the previous 3" in rule.stop_reason
    assert json.loads(history.read_text())["3"]["val_accuracy"] == 0.4

