"""The throughput benchmark (trainer.benchmarks, `python -m trainer.bench`): a tiny run writes
every figure, consistent ratios and its settings. No timing assertions: the figures depend on the
machine. The run is in-process (settings parsed by the CLI's own flags); the converter's helper
process and the command line's exit status are real processes."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfrecords_tool import errors, records

REPO = Path(__file__).resolve().parents[1]

TINY_FLAGS = {
    "pages_per_class": 2, "max_side": 200, "image_size": 64, "repeats": 1, "batch_size": 16,
    "warmup_batches": 2, "timed_batches": 3, "record_copies": 2, "augment_batch_size": 8,
    "augment_batches": 2, "cache_records": 32, "cache_batch_size": 16, "seed_batch_size": 8,
    "png_timed_batches": 2, "jpeg_qualities": "75,95", "timed_epochs": 1, "convert_repeats": 2,
    "convert_budget_s": 0.0,
    # model2 at 32 px: the smallest cached-epoch measurement (the default is model1 at 128 px)
    "cache_model": "model2", "cache_image_size": 32, "stage_pages": 8,
    "train_models": "model2", "train_batch_size": 8, "train_steps": 2,
    "stages": "inputs",  # the loop stage: its own test below
}
# Stands in for nvidia-smi's `-lms` sampling: two samples, then it runs until terminated.
FAKE_NVIDIA_SMI = "#!/bin/sh\necho 40\necho 60\nexec sleep 300\n"

FIGURES = [
    "seed_loader_img_s", "convert_img_s_1", "convert_img_s_all", "convert_scaling",
    "convert_vs_seed", "convert_img_s_png", "convert_img_s_jpeg", "pipeline_img_s",
    "pipeline_img_s_png", "pipeline_img_s_jpeg", "pipeline_img_s_augment", "pipeline_img_s_per_core",
    "pipeline_vs_seed", "augment_cpu_img_s", "bytes_per_record_raw", "bytes_per_record_png",
    "bytes_per_record_jpeg", "uncached_epoch_s", "cached_epoch_s", "cached_epoch_speedup",
    "resize_ms", "resize_ms_bilinear",
]


def _config_from_flags(argv):
    """BenchConfig as `python -m trainer.bench` makes it from `argv` (its own flag definitions)."""
    from absl import flags
    from tfrecords_tool import cli
    from trainer.benchmarks.config import BenchConfig

    flag_values = flags.FlagValues()
    cli.define_flags(BenchConfig, flag_values)
    flag_values(["trainer.bench"] + argv)
    return cli.from_flags(BenchConfig, flag_values)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from trainer.benchmarks import run, table

    tmp = tmp_path_factory.mktemp("bench")
    output = tmp / "bench.json"
    argv = [f"--output={output}", f"--work_dir={tmp}"]
    argv += [f"--{name}={value}" for name, value in TINY_FLAGS.items()]
    config = _config_from_flags(argv)
    tools = tmp / "tools"
    tools.mkdir()
    (tools / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (tools / "nvidia-smi").chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
        result = run.bench(config)
    run.write(result, str(output))
    return json.loads(output.read_text()), table.table(result), tmp


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_figure_is_positive_and_finite(bench):
    result, _, _ = bench
    for key in FIGURES:
        assert key in result, key
        assert _positive(result[key]), (key, result[key])


def test_ratios_match_their_values(bench):
    result, _, _ = bench
    r = result
    assert r["pipeline_vs_seed"] == pytest.approx(r["pipeline_img_s"] / r["seed_loader_img_s"])
    assert r["convert_scaling"] == pytest.approx(r["convert_img_s_all"] / r["convert_img_s_1"])
    assert r["convert_vs_seed"] == pytest.approx(r["convert_img_s_all"] / r["seed_loader_img_s"])
    assert r["cached_epoch_speedup"] == pytest.approx(r["uncached_epoch_s"] / r["cached_epoch_s"])
    cores = r["machine"]["cpu_cores"]
    assert r["pipeline_img_s_per_core"] == pytest.approx(r["pipeline_img_s"] / cores)
    # reported figures are the best of the recorded samples
    assert r["seed_loader_img_s"] == max(r["seed_loader"]["samples"])
    assert r["pipeline_img_s"] == max(r["pipeline"]["raw"]["samples"])
    assert r["pipeline_img_s_png"] == max(r["pipeline"]["png"]["samples"])
    assert r["pipeline_img_s_jpeg"] == max(r["pipeline"]["jpeg"]["samples"])
    assert r["convert_img_s_1"] == max(run["img_s"] for run in r["convert"]["workers_1"])
    assert r["convert_img_s_all"] == max(run["img_s"] for run in r["convert"]["workers_all"])
    for name, target in r["targets"].items():
        met = (target["value"] <= target["target"] if target["at_most"]
               else target["value"] >= target["target"])
        assert target["met"] == met, name



def test_measured_what_it_says(bench):
    result, _, _ = bench
    pages = 16 * TINY_FLAGS["pages_per_class"]
    assert result["sample"]["pages"] == pages
    assert result["seed_loader"]["images_per_pass"] == pages
    assert result["seed_loader"]["batch_shape"][1:] == [64, 64, 3]
    runs = result["convert"]["workers_1"] + result["convert"]["workers_all"]
    assert len(runs) == 2 * TINY_FLAGS["convert_repeats"]
    for run in runs + [result["convert"]["png"], result["convert"]["jpeg"]]:
        assert run["pages"] == run["records"] == pages and run["skipped"] == 0
        assert run["img_s"] == pytest.approx(pages / run["seconds"], rel=1e-3)
    assert result["convert"]["png"]["image_format"] == "png"
    assert result["convert"]["jpeg"]["image_format"] == "jpeg"
    assert result["convert"]["jpeg"]["jpeg_quality"] == records.DEFAULT_JPEG_QUALITY
    drift = result["jpeg_drift"]
    assert drift["pages"] == TINY_FLAGS["stage_pages"] and set(drift) == {"pages", "75", "95"}
    assert drift["95"]["bytes"] > drift["75"]["bytes"]  # smaller files, larger errors
    assert 0 < drift["95"]["mean_abs_error"] < drift["75"]["mean_abs_error"]
    assert result["convert"]["cache_records"]["records"] == 32
    assert set(result["convert_cores_used"]) == {"1", "all"}
    assert result["convert"]["workers_1"][0]["workers"] == 1
    assert result["convert"]["workers_all"][0]["workers"] == result["settings"]["workers"]
    assert result["pipeline"]["raw"]["batch_shape"] == [16, 64, 64, 1]
    assert result["pipeline"]["png"]["batch_shape"] == [16, 64, 64, 1]
    assert result["pipeline"]["jpeg"]["batch_shape"] == [16, 64, 64, 1]
    assert "note" in result["pipeline"]["augment"] and "pipeline_img_s_augment" in result["notes"]
    stages = result["page_stages"]
    assert stages["pages"] == TINY_FLAGS["stage_pages"] and stages["image_size"] == 64
    assert result["resize_ms"] == stages["resize_ms"]["converter"]
    assert _positive(stages["gray_page_ms"])
    assert set(stages["resize_ms"]) == {"converter", "bilinear", "box", "nearest_reference"}
    # the converter's resize is antialiased: far closer to plain bilinear than nearest-neighbour
    differences = stages["mean_abs_diff_to_bilinear"]
    assert 0 < differences["converter"] < differences["nearest_reference"] / 2, differences
    assert result["bytes_per_record_raw"] > 64 * 64  # the pixels plus the Example's fields
    cached = result["cached_epochs"]
    assert cached["image_size"] == 32 and cached["model"] == "model2"
    assert cached["records"] == 32 and cached["steps_per_epoch"] == 2
    assert len(cached["uncached_epoch_s"]) == len(cached["cached_epoch_s"]) == 2  # warm-up + 1
    training = result["training"]["model2"]
    assert training["batch_size"] == 8 and training["steps_per_epoch"] == 2
    assert training["policy"] == "float32" and training["replicas"] == 1  # CPU: precision auto
    for name in ("in_memory", "pipeline"):
        assert _positive(training[f"img_s_{name}"])
        assert len(training[f"epoch_s_{name}"]) == 2  # warm-up + 1
        assert training[f"gpu_utilization_{name}"] == 50.0  # the fake nvidia-smi's two samples
    assert training["pipeline_vs_in_memory"] == pytest.approx(
        training["img_s_pipeline"] / training["img_s_in_memory"])
    assert training["input_bound"] == (training["pipeline_vs_in_memory"] < 0.95)


def test_settings_and_machine_recorded(bench):
    result, stdout, tmp = bench
    for name, value in TINY_FLAGS.items():
        expected = value.split(",") if name in ("train_models", "jpeg_qualities", "stages") else value
        assert result["settings"][name] == expected, name
    machine = result["machine"]
    for key in ("cpu_cores", "cpu_model", "tensorflow", "gpu", "loadavg_before", "parallel_capacity"):
        assert key in machine, key
    assert set(result["stage_s"]) >= {"generate", "seed_loader", "convert_raw", "pipeline_raw",
                                      "cached_epochs"}
    assert set(result["targets"]) == {"convert_scaling", "convert_img_s_all_vs_seed",
                                      "pipeline_vs_seed", "pipeline_img_s_per_core",
                                      "cached_epoch_speedup"}
    assert "pipeline_vs_seed" in stdout and "cached_epoch_speedup" in stdout  # the table
    assert "train_img_s_model2" in stdout
    assert not [p for p in tmp.iterdir() if p.name.startswith("bench-")]  # work dir removed


def test_loop_stage_alone_measures_only_the_loop(tmp_path):
    from trainer.benchmarks import run, table

    config = _config_from_flags([f"--work_dir={tmp_path}", "--stages=loop", "--repeats=1",
                                 "--loop_steps_cached=10", "--loop_steps_model2=1",
                                 "--loop_epochs=1", "--cache_batch_size=4"])
    result = run.bench(config)
    assert "convert" not in result and "seed_loader_img_s" not in result
    assert set(result["stage_s"]) == {"loop_cached", "loop_model2"}
    loop = result["loop"]
    assert (loop["cached"]["model"], loop["cached"]["cached_head"]) == ("model1", True)
    assert (loop["model2"]["image_size"], loop["model2"]["cached_head"]) == (64, False)
    assert loop["cached"]["steps_per_execution"] == 10 and loop["model2"]["steps_per_execution"] == 1
    for key, measured in loop.items():
        assert len(measured["step_loop_s"]["bare"]) == len(measured["step_loop_s"]["product"]) == 1
        assert measured["product_epoch_end_s"] > 0  # checkpoints, histograms
        assert result[f"loop_overhead_{key}"] == pytest.approx(
            measured["bare_steps_s"] / measured["product_steps_s"], rel=0.01)  # rounded steps/s
    assert set(result["targets"]) == {"loop_overhead_cached", "loop_overhead_model2"}
    for target in result["targets"].values():
        assert target["at_most"] and target["met"] == (target["value"] <= target["target"])
    printed = table.table(result)
    assert "loop_overhead_model2" in printed and "<=1.05" in printed


def test_load_stage_times_both_loaders_on_one_saved_model(tmp_path):
    from trainer.benchmarks import run, table

    result = run.bench(_config_from_flags([f"--work_dir={tmp_path}", "--stages=load",
                                           "--repeats=2", "--image_size=32"]))
    assert set(result["stage_s"]) == {"load"} and "sample" not in result
    load = result["load"]
    assert (load["model"], load["image_size"]) == ("model2", 32) and load["file_mb"] > 50  # VGG16: 56 MB
    for loader in ("keras", "product"):
        assert len(load["samples_s"][loader]) == 2
        assert load[f"{loader}_s"] == min(load["samples_s"][loader]) > 0
    assert result["model_load_speedup"] == pytest.approx(load["keras_s"] / load["product_s"],
                                                         rel=0.01)
    assert "model_load_speedup" in table.table(result)


def test_unknown_stage_is_refused_before_any_work():
    from trainer.benchmarks import run
    from trainer.benchmarks.config import BenchConfig

    with pytest.raises(errors.UsageError, match="stages: unknown bogus"):
        run.check(BenchConfig(stages=["loop", "bogus"]))


def test_command_line_refuses_settings_that_cannot_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, "-m", "trainer.bench", f"--output={tmp_path}/b.json",
                          "--cache_model=model1", "--cache_image_size=64"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == errors.NOTHING_DONE, run.stderr[-3000:]
    assert "error: cache_model=model1 needs cache_image_size >= 128" in run.stderr
    assert not (tmp_path / "b.json").exists()
