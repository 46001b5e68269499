"""trainer.evaluate: metrics against an independent computation, its files and TensorBoard log."""
import glob
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfrecords_tool.classes import RVL_CDIP_CLASSES
from tfrecords_tool import records
from tfrecords_tool.records import parse_one
from trained_run import IMAGE_SIZE, check, run_module, trained_run  # noqa: F401
from trainer import artifacts


@pytest.fixture(scope="module")
def evaluation(trained_run):  # noqa: F811
    """Evaluates `val` under a 2-replica MirroredStrategy; batches of 5 leave a ragged last one."""
    result = check(run_module("trainer.evaluate", f"--model_dir={trained_run.model_dir}",
                              f"--data_dir={trained_run.data_dir}", "--split=val",
                              "--cpu_replicas=2", "--batch_size=5"))
    out_dir = trained_run.model_dir / "eval-val"
    with open(out_dir / "metrics.json") as f:
        return result, json.load(f), out_dir


def _predict_records(run):
    """(probabilities, labels): every `val` record, parsed one by one, through model.predict."""
    images, labels = [], []
    for path in sorted(glob.glob(str(run.data_dir / "val-*.tfrecord"))):
        for record in tf.data.TFRecordDataset(path):
            example = parse_one(record.numpy())
            assert example[records.FORMAT_KEY] == b"raw"
            images.append(np.frombuffer(example[records.RAW_KEY], np.uint8)
                          .reshape(IMAGE_SIZE, IMAGE_SIZE, 1))
            labels.append(example[records.LABEL_KEY])
    model = artifacts.load_model(str(run.model_dir))
    return model.predict(np.stack(images), verbose=0), np.array(labels)


def test_metrics_match_independent_computation(trained_run, evaluation):  # noqa: F811
    result, metrics, _ = evaluation
    probs, labels = _predict_records(trained_run)
    with open(trained_run.data_dir / "val-manifest.json") as f:
        assert metrics["num_records"] == json.load(f)["num_records"] == len(labels)
    predicted = probs.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == labels))
    top3 = np.argsort(-probs, axis=1)[:, :3]
    assert metrics["top_3_accuracy"] == pytest.approx(np.mean((top3 == labels[:, None]).any(1)))
    expected_loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-4)

    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (16, 16)
    assert confusion.sum() == len(labels)
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=16))
    for true, pred in zip(labels, predicted):
        confusion[true, pred] -= 1
    assert not confusion.any()  # rows = true class, columns = predicted

    assert metrics["class_names"] == list(RVL_CDIP_CLASSES)
    for row in metrics["per_class"]:
        c = row["class_id"]
        assert row["class_name"] == RVL_CDIP_CLASSES[c]
        assert row["support"] == int(np.sum(labels == c))
        hits = np.sum((labels == c) & (predicted == c))
        assert row["recall"] == pytest.approx(hits / row["support"] if row["support"] else 0)
        n_predicted = np.sum(predicted == c)
        assert row["precision"] == pytest.approx(hits / n_predicted if n_predicted else 0)
    assert f"accuracy {metrics['accuracy']:.4f}" in result.stdout


def test_confusion_matrix_png_and_tensorboard(trained_run, evaluation):  # noqa: F811
    _, metrics, out_dir = evaluation
    with Image.open(out_dir / "confusion_matrix.png") as image:
        assert image.format == "PNG" and min(image.size) > 800
    scalars, images, steps = {}, [], set()
    for path in glob.glob(str(trained_run.model_dir / "logs" / "eval-val" / "events.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if event.summary.value:
                steps.add(event.step)
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                if array.dtype == object:
                    images.append(value.tag)
                else:
                    scalars[value.tag] = float(array)
    assert images == ["confusion_matrix"]
    assert steps == {1}  # final.keras after 2 epochs: at the last epoch's step of the curves
    assert scalars["eval/accuracy"] == pytest.approx(metrics["accuracy"])
    assert scalars["eval/loss"] == pytest.approx(metrics["loss"])
    assert scalars["f1/letter"] == pytest.approx(metrics["per_class"][0]["f1"])


def test_missing_model_dir_and_split(trained_run, tmp_path, capsys):  # noqa: F811
    """In-process through cli.call: the exit status and `error:` line the command gives."""
    from tfrecords_tool import cli
    from trainer.evaluation import EvaluateConfig, evaluate

    status = cli.call(evaluate, EvaluateConfig(model_dir=str(tmp_path / "nope"),
                                               data_dir=str(trained_run.data_dir), split="val"))
    assert status == 2
    assert f"error: model dir {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    status = cli.call(evaluate, EvaluateConfig(model_dir=str(trained_run.model_dir),
                                               data_dir=str(trained_run.data_dir), split="test"))
    assert status == 2
    stderr = capsys.readouterr().err
    assert "no manifest" in stderr and "test-manifest.json" in stderr


@pytest.mark.parametrize("damage", ["truncated", "flipped_bytes", "not_a_zip", "no_weights"])
def test_a_damaged_model_file_is_named_in_one_error_line(trained_run, tmp_path, capsys, damage):  # noqa: F811
    """A .keras that a copy cut short, a flipped byte in its weights, another file under the
    name, an archive without weights: exit 2 and one line naming the file, no traceback."""
    import shutil
    import zipfile

    from tfrecords_tool import cli
    from trainer.evaluation import EvaluateConfig, evaluate

    model_dir = tmp_path / "run"
    shutil.copytree(trained_run.model_dir, model_dir,
                    ignore=shutil.ignore_patterns("checkpoints", "backup", "logs"))
    path = model_dir / "final.keras"
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(data[:len(data) // 2]))
    elif damage == "flipped_bytes":  # inside model.weights.h5: the zip's CRC check fails
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("model.weights.h5")
        middle = info.header_offset + 100 + info.compress_size // 2
        data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
        path.write_bytes(bytes(data))
    elif damage == "not_a_zip":
        path.write_text("<html>403 Forbidden</html>\n")
    else:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp_path / "x.keras", "w") as out:
            for name in ("config.json", "metadata.json"):
                out.writestr(name, source.read(name))
        shutil.move(tmp_path / "x.keras", path)
    capsys.readouterr()
    status = cli.call(evaluate, EvaluateConfig(model_dir=str(model_dir),
                                               data_dir=str(trained_run.data_dir), split="val"))
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert f"{path} is damaged or not a Keras model" in errors[0]
    assert "--checkpoint=best" in errors[0]
    assert "Traceback" not in stderr
