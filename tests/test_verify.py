"""verify: a good dataset passes; damaged, missing or miscounted shards are named."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tfrecords_tool import conversion
from tfrecords_tool import errors
from tfrecords_tool import verification

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    conversion.convert(output_dir=str(out), images_dir=str(sample_dir / "images"),
                       labels=str(sample_dir / "labels.txt"), num_shards=3, image_size=32,
                       val_fraction=0.25, workers=0)
    return out


@pytest.fixture
def copy(dataset, tmp_path):
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


def _problems(data_dir, split="train"):
    return verification.verify_split(str(data_dir), split)[0]


def test_good_dataset_passes(dataset):
    for split in ("train", "val"):
        problems, manifest = verification.verify_split(str(dataset), split)
        assert problems == [] and manifest["num_records"] == {"train": 72, "val": 24}[split]


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_encoded_datasets_pass(sample_dir, tmp_path, image_format):
    conversion.convert(output_dir=str(tmp_path), images_dir=str(sample_dir / "images"),
                       labels=str(sample_dir / "labels.txt"), image_size=32,
                       image_format=image_format, num_shards=2, workers=0)
    assert _problems(tmp_path, "labels") == []
    manifest = json.loads((tmp_path / "labels-manifest.json").read_text())
    assert manifest["image_format"] == image_format


def test_flipped_bytes_name_the_shard(copy):
    shard = copy / "train-00001-of-00003.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = _problems(copy)
    assert len(problems) == 1 and problems[0].startswith("train-00001-of-00003.tfrecord: damaged")


def test_deleted_and_extra_shards(copy):
    (copy / "train-00002-of-00003.tfrecord").rename(copy / "train-00002-of-00004.tfrecord")
    assert _problems(copy) == ["train-00002-of-00003.tfrecord: missing",
                               "train-00002-of-00004.tfrecord: not in the manifest"]
    assert _problems(copy, "val") == []


def test_wrong_counts_in_manifest(copy):
    path = copy / "train-manifest.json"
    manifest = json.loads(path.read_text())
    manifest["class_counts"][3] += 1
    manifest["shards"][0]["num_records"] -= 1
    path.write_text(json.dumps(manifest))
    assert _problems(copy) == ["train-00000-of-00003.tfrecord: 24 records, manifest says 23"]
    manifest["shards"][0]["num_records"] += 1
    path.write_text(json.dumps(manifest))
    assert _problems(copy) == ["class 3 (handwritten): 4 records, manifest says 5"]


def test_cli(copy):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "tfrecords_tool.verify", f"--data_dir={copy}", *args],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    ok = run()
    assert ok.returncode == 0
    assert ok.stdout.splitlines()[0].startswith("OK train: 72 records in 3 shards")
    (copy / "val-00000-of-00003.tfrecord").unlink()
    failed = run()
    assert failed.returncode == errors.SOME_INPUTS_FAILED == 1
    assert "verify: val: val-00000-of-00003.tfrecord: missing" in failed.stderr
    assert "OK train" in failed.stdout and failed.stderr.strip().endswith("1 of 2 splits failed")


def test_library_results_and_no_manifest(copy, tmp_path):
    results = verification.verify(data_dir=str(copy))
    assert [(r.split, r.problems, r.manifest["num_records"]) for r in results] == [
        ("train", [], 72), ("val", [], 24)]
    assert verification.verify(verification.VerifyConfig(str(copy)), split="val")[0].problems == []
    (copy / "val-00000-of-00003.tfrecord").unlink()
    assert [r.problems for r in verification.verify(data_dir=str(copy))] == [
        [], ["val-00000-of-00003.tfrecord: missing"]]
    for settings in ({"data_dir": str(tmp_path / "empty")}, {"data_dir": str(copy), "split": "x"}):
        with pytest.raises(verification.NoManifest, match="manifest.json") as raised:
            verification.verify(**settings)
        assert raised.value.exit_code == errors.NOTHING_DONE == 2
