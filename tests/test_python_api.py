"""The Python API as a notebook uses it: examples/python_api.py runs (in this process) and gets
model2's history back."""
import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "python_api.py"


def test_notebook_style_script_trains_model2_and_gets_its_history(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(tmp_path)])
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    result, metrics = namespace["result"], namespace["metrics"]
    assert result.trained_now
    assert {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(result.history)
    assert len(result.history["loss"]) == 3 and len(result.history["val_accuracy"]) == 3
    assert result.best_model == str(tmp_path / "model2" / "best.keras")
    assert Path(result.final_model).exists() and Path(result.tensorboard_dir).is_dir()
    assert 0 <= metrics["accuracy"] <= 1 and metrics["num_records"] == 32
    printed = capsys.readouterr().out
    assert "epoch 3: loss" in printed and "val accuracy of final.keras" in printed
