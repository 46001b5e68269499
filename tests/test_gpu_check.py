"""scripts/gpu_check.sh, run on this CPU at a tiny size (no GPU here): the grid of bench runs it
makes and the one JSON it writes. A real process: the script and its exit status are what is
under test."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAKE_NVIDIA_SMI = "#!/bin/sh\necho 70\necho 90\nexec sleep 300\n"


def _run(tmp_path, **env):
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (tools / "nvidia-smi").chmod(0o755)
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
               PATH=f"{tools}{os.pathsep}{os.environ['PATH']}", **env)
    return subprocess.run(["bash", "scripts/gpu_check.sh", str(tmp_path / "gpu.json")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    run = _run(tmp_path)
    assert run.returncode == 2 and "TensorFlow sees no GPU" in run.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_grid_of_runs_into_one_json(tmp_path):
    run = _run(tmp_path, GPU_CHECK_ALLOW_CPU="1", GPU_CHECK_STRATEGIES="one_device mirrored",
               GPU_CHECK_JIT="off", GPU_CHECK_PRECISION="float32",
               GPU_CHECK_FLAGS="--image_size=32 --train_models=model2 --train_batch_size=4 "
                               "--train_steps=1 --repeats=1 --pages_per_class=1 --max_side=200 "
                               "--record_copies=1 --cpu_replicas=2")
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = {(row["strategy"], row["model"]): row for row in result["runs"]}
    assert set(rows) == {("one_device", "model2"), ("mirrored", "model2")}
    assert rows["one_device", "model2"]["replicas"] == 1
    assert rows["mirrored", "model2"]["replicas"] == 2
    for row in rows.values():
        assert row["policy"] == "float32" and row["jit_compile"] is False
        assert row["image_size"] == 32 and row["global_batch"] == 4
        assert row["img_s_pipeline"] > 0 and row["img_s_in_memory"] > 0
        assert row["gpu_utilization_pipeline"] == 80.0  # the fake nvidia-smi's two samples
        assert row["input_bound"] == (row["pipeline_vs_in_memory"] < 0.95)
    assert result["machine"]["cpu_cores"] >= 1
