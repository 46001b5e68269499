"""trainer.report: PNGs and index.html from a real training run and from synthetic logs."""
import re
import shutil

import numpy as np
import tensorflow as tf
from PIL import Image

from trained_run import check, run_module, trained_run  # noqa: F401


def _write_synthetic_run(run_dir, epochs=4):
    """Logs shaped like trainer.main's: Keras epoch scalars and per-variable histograms."""
    rng = np.random.default_rng(0)
    for split, offset in (("train", 0.0), ("validation", 0.2)):
        with tf.summary.create_file_writer(str(run_dir / split)).as_default():
            for epoch in range(epochs):
                tf.summary.scalar("epoch_loss", 2.0 / (epoch + 1) + offset, step=epoch)
                tf.summary.scalar("epoch_accuracy", 0.2 * epoch - offset / 2, step=epoch)
    with tf.summary.create_file_writer(str(run_dir / "gradients")).as_default():
        for epoch in range(epochs):
            scale = 1.0 / (epoch + 1)
            for layer in ("conv_fc1", "predictions"):
                for var in ("kernel", "bias"):
                    tf.summary.histogram(f"gradients/{layer}/{var}",
                                         rng.normal(0, 0.01 * scale, 500), step=epoch)
                    tf.summary.histogram(f"weights/{layer}/{var}",
                                         rng.normal(epoch * 0.1, 0.1, 500), step=epoch)
            tf.summary.scalar("gradients/global_norm", scale, step=epoch)


def test_report_of_two_runs(trained_run, tmp_path):  # noqa: F811
    runs = tmp_path / "runs"
    shutil.copytree(trained_run.model_dir / "logs", runs / "model2")
    _write_synthetic_run(runs / "synthetic")
    output = tmp_path / "report"
    check(run_module("trainer.report", f"--log_dir={runs}", f"--output={output}"))

    pngs = sorted(p.name for p in output.glob("*.png"))
    assert {"curves.png", "synthetic-gradients.png", "synthetic-weights.png"} <= set(pngs)
    index = (output / "index.html").read_text()
    assert sorted(re.findall(r"<img src='([^']+)'", index)) == pngs
    assert "model2" in index and "synthetic" in index
    for name in pngs:
        with Image.open(output / name) as image:
            assert image.format == "PNG"
            image.verify()
    with Image.open(output / "curves.png") as image:  # 2 run columns, loss and accuracy rows
        assert image.size[0] > 800 and image.size[1] > 600
    with Image.open(output / "synthetic-weights.png") as image:  # 4 variables in one row
        assert image.size[0] > 3 * image.size[1]


def test_empty_or_missing_log_dir(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)  # a run without any events
    for log_dir, message in ((tmp_path / "empty", "no TensorBoard runs under"),
                             (tmp_path / "missing", "does not exist")):
        result = run_module("trainer.report", f"--log_dir={log_dir}",
                            f"--output={tmp_path / 'out'}")
        assert result.returncode == 2
        assert message in result.stderr and str(log_dir) in result.stderr
    assert not (tmp_path / "out").exists()
