"""trainer.reporting (the library behind `python -m trainer.report`): the comparison page and
report.json of real runs (model2 and the two model3 runs) match their history.json /
metrics.json. The command line itself runs once, for its exit status and error line."""
import html
import json
import re
import shutil

import pytest
from PIL import Image

from model3_runs import model3_runs  # noqa: F401
from trained_run import run_module, trained_run  # noqa: F401
from trainer import reporting


def test_comparison_of_three_runs(trained_run, model3_runs, tmp_path):  # noqa: F811
    runs = tmp_path / "runs"
    shutil.copytree(model3_runs.runs_dir, runs)
    shutil.copytree(trained_run.model_dir, runs / "model2", ignore=shutil.ignore_patterns(
        "feature_cache", "backup", "checkpoints", "*.keras", "eval-*"))  # no evaluation
    output = tmp_path / "report"
    result = reporting.report(runs=str(runs), output=str(output))

    index = (output / "index.html").read_text()
    record = json.loads((output / "report.json").read_text())
    assert result.paths[-2:] == [f"{output}/index.html", f"{output}/report.json"]
    assert [r["run"] for r in result.record["runs"]] == [r["run"] for r in record["runs"]]
    names = ["model2", "recommended", "reference"]
    assert [r["run"] for r in record["runs"]] == names
    for row in record["runs"]:
        assert f"<section id='{row['run']}'>" in index
        with open(runs / row["run"] / "history.json") as f:
            history = [v for _, v in sorted(json.load(f).items(), key=lambda kv: int(kv[0]))]
        best = max(range(len(history)), key=lambda i: history[i]["val_accuracy"])
        assert row["epochs"] == len(history)
        assert row["best_val_accuracy"] == history[best]["val_accuracy"]
        assert row["best_epoch"] == best + 1
        assert row["final_loss"] == history[-1]["loss"]
        assert row["final_val_loss"] == history[-1]["val_loss"]
        assert f"{row['best_val_accuracy']:.4f} ({best + 1})" in index
        assert f"{row['final_loss']:.4f} / {row['final_val_loss']:.4f}" in index
        with open(runs / row["run"] / "run.json") as f:
            info = json.load(f)
        assert (row["model"], row["total_params"], row["replicas"]) == (
            info["model"], info["total_params"], info["replicas"])
        assert f"{info['total_params']:,} / {info['trainable_params']:,}" in index
        assert row["seconds_per_epoch"] > 0 and row["images_per_second"] > 0
        for finding in row["diagnoses"]:
            assert set(finding) == {"code", "message", "flag", "evidence"}
            assert html.escape(finding["message"]) in index
    codes = {r["run"]: [d["code"] for d in r["diagnoses"]] for r in record["runs"]}
    assert {"stuck_at_chance", "backbone_too_fast"} <= set(codes["reference"])
    assert "stuck_at_chance" not in codes["recommended"]

    with open(runs / "recommended" / "eval-val" / "metrics.json") as f:
        metrics = json.load(f)
    evaluation = record["runs"][1]["evaluations"]["val"]
    assert evaluation["accuracy"] == metrics["accuracy"] and evaluation["macro_f1"] == metrics["macro_f1"]
    assert f"val: {metrics['accuracy']:.4f}" in index
    for row in metrics["per_class"]:
        assert f"<td>{row['class_name']}</td><td>{row['precision']:.3f}</td>" in index
    assert record["runs"][0]["evaluations"] == {}

    # flags that differ: the model, the backbone rate, data and epochs; not what is equal
    assert {"model", "backbone_learning_rate"} <= set(record["differing_flags"])
    assert "learning_rate" not in record["differing_flags"]
    pngs = set(re.findall(r"<img src='([^']+)'", index))
    assert {"comparison.png", "reference-layer_stats.png", "recommended-confusion-val.png"} <= pngs
    for name in pngs:
        with Image.open(output / name) as image:
            image.verify()


def test_empty_or_missing_runs_dir(tmp_path):
    (tmp_path / "empty" / "nothing").mkdir(parents=True)
    # the command line: exit status and the one error line
    runs = tmp_path / "empty"
    result = run_module("trainer.report", f"--runs={runs}", f"--output={tmp_path / 'out'}")
    assert result.returncode == 2
    assert "no runs under" in result.stderr and str(runs) in result.stderr
    # the library: the same error, raised
    runs = tmp_path / "missing"
    with pytest.raises(reporting.ReportError, match="does not exist") as raised:
        reporting.report(reporting.ReportConfig(runs=str(runs), output=str(tmp_path / "out")))
    assert raised.value.exit_code == 2 and str(runs) in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_weight_histograms_from_the_keras_tensorboard_callback(tmp_path):
    """What main.py's TensorBoard(histogram_freq=...) writes is read as `weights/...` panels:
    the trainable layers' variables only (Keras logs frozen and non-trainable ones too)."""
    import numpy as np
    import tf_keras as keras

    model_dir = tmp_path / "runs" / "tiny"
    frozen = keras.layers.Dense(4, name="frozen", trainable=False)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="predictions")(frozen(inputs)))
    model.compile("sgd", "mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=2, verbose=0, callbacks=[
        keras.callbacks.TensorBoard(str(model_dir / "logs"), histogram_freq=1, write_graph=False)])
    (model_dir / "run.json").write_text(json.dumps({"trainable_layers": ["predictions"]}))

    run = reporting.load_run(str(model_dir))
    assert sorted(run["histograms"]) == ["weights/predictions/bias", "weights/predictions/kernel"]
    for series in run["histograms"].values():
        assert sorted(series) == [0, 1] and all(h.shape[1] == 3 for h in series.values())
    kernel = run["histograms"]["weights/predictions/kernel"][1]
    assert kernel[:, 2].sum() == 8  # 4 x 2 values counted
    result = reporting.report(runs=str(tmp_path / "runs"), output=str(tmp_path / "report"))
    assert f"{tmp_path / 'report'}/tiny-weights.png" in result.paths
