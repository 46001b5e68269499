"""A briefly trained model on the sample, made once per session, and a CLI runner.

The fixture goes through the library, in this process: tfrecords_tool.conversion.convert, then
trainer.train (model2, 32x32, random VGG16 weights, 2 epochs of 3 steps).
"""
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32


def run_python(*args, cwd=REPO, env=None):
    """Runs `python args...` in a fresh interpreter; returns the CompletedProcess (text output)."""
    env = dict(env or os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def run_module(module, *args):
    """Runs `python -m module args...` from the repository root."""
    return run_python("-m", module, *args)


def check(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="session")
def trained_run(sample_dir, tmp_path_factory):
    """Namespace(sample_dir, data_dir, model_dir): `train` and `val` splits, a finished run.

    Test modules import this fixture, and pytest keeps one instance per importing module: the
    run lives at a fixed place in the session's temp dir so that it is made only once.
    """
    from tfrecords_tool.conversion import convert
    from trainer import TrainConfig, train

    root = tmp_path_factory.getbasetemp() / "trained_run"
    data_dir, model_dir = root / "data", root / "model"
    run = types.SimpleNamespace(sample_dir=sample_dir, data_dir=data_dir, model_dir=model_dir)
    if (model_dir / "final.keras").exists():
        return run
    convert(labels=str(sample_dir / "labels.txt"), images_dir=str(sample_dir / "images"),
            output_dir=str(data_dir), image_size=IMAGE_SIZE, val_fraction=0.2, workers=0)
    train(TrainConfig(model="model2", weights="none", data_dir=str(data_dir),
                      model_dir=str(model_dir), epochs=2, steps_per_epoch=3, batch_size=16))
    return run
