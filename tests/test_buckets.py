"""Every tool on s3:// paths, against moto's local S3 server (tensorflow-io's S3 file system,
pointed at it with S3_ENDPOINT): convert, verify, train, evaluate, predict, export, report.
The converter's and the trainer's command lines run as processes (the s3 exit fix is part of
what is tested); the other tools' libraries in one process (tests/s3_library_run.py)."""
import json
import signal

import numpy as np
import pytest
import tf_keras as keras

from trained_run import REPO, check, run_python
from tfrecords_tool import conversion
from trainer import compat
from trainer_fixtures import base_args, clean_env, epoch_headers, run_trainer, start_trainer, wait_for
from trainer_fixtures import trainer_data  # noqa: F401  (session fixture)

BUCKET = "documents"


@pytest.fixture(scope="module")
def s3():
    """(boto3 client, environment for the tools) of a fresh local S3 server with one bucket."""
    import boto3  # pylint: disable=import-outside-toplevel
    from moto.server import ThreadedMotoServer  # pylint: disable=import-outside-toplevel

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    env = clean_env(S3_ENDPOINT=f"http://{host}:{port}", S3_USE_HTTPS="0", S3_VERIFY_SSL="0",
                    AWS_EC2_METADATA_DISABLED="true", **credentials)
    yield client, env
    server.stop()


def _tool(env, *args):
    return run_python(*args, env=env)


def _keys(client, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"][len(prefix):] for page in pages for item in page.get("Contents", [])}


def _body(client, key):
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_tensorflow_io_still_aborts_after_s3_use(s3):
    """Why tfrecords_tool.filesystems.run exists (tensorflow/io#2039): a plain script that reads
    an s3:// object exits with SIGABRT. If this starts to pass, the work-around can go."""
    client, env = s3
    client.put_object(Bucket=BUCKET, Key="probe.txt", Body=b"x")
    script = ("import tensorflow as tf, tensorflow_io\n"
              f"assert tf.io.gfile.GFile('s3://{BUCKET}/probe.txt', 'rb').read() == b'x'\n")
    result = _tool(env, "-c", script)
    assert result.returncode == -6 or result.returncode == 134, (result.returncode, result.stderr)
    assert "pure virtual method called" in result.stderr


def test_a_tool_failing_after_s3_use_keeps_its_message_and_status(s3, sample_dir):
    _, env = s3
    result = _tool(env, "-m", "tfrecords_tool.convert", f"--labels={sample_dir / 'labels.txt'}",
                  f"--images_dir={sample_dir / 'nowhere'}", f"--output_dir=s3://{BUCKET}/failed")
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])  # errors.NOTHING_DONE
    assert "error: none of 20 sampled pages exists" in result.stderr
    assert "pure virtual method called" not in result.stderr


def test_every_tool_reads_and_writes_s3(s3, sample_dir, tmp_path):
    client, env = s3
    records, run = f"s3://{BUCKET}/records", f"s3://{BUCKET}/run"
    convert = ["-m", "tfrecords_tool.convert", f"--labels={sample_dir / 'labels.txt'}",
               f"--images_dir={sample_dir / 'images'}", "--image_size=32", "--val_fraction=0.25",
               "--num_shards=2", "--workers=2"]
    check(_tool(env, *convert, f"--output_dir={records}"))
    conversion.convert(labels=str(sample_dir / "labels.txt"), images_dir=str(sample_dir / "images"),
                       output_dir=str(tmp_path / "records"), image_size=32, val_fraction=0.25,
                       num_shards=2, workers=0)  # the local reference, in-process
    shards = sorted(p.name for p in (tmp_path / "records").glob("*.tfrecord"))
    assert len(shards) == 4
    for name in shards + ["train-manifest.json", "val-manifest.json"]:  # the same bytes
        assert _body(client, f"records/{name}") == (tmp_path / "records" / name).read_bytes(), name
    # pages, label file and VGG16 weights (an offline cluster's copy of the ImageNet file) in
    # the bucket; the library of the other tools on them, in one process
    for path in sorted(sample_dir.rglob("*.tif")) + [sample_dir / "labels.txt"]:
        client.upload_file(str(path), BUCKET, f"sample/{path.relative_to(sample_dir)}")
    keras.utils.set_random_seed(5)
    vgg16 = keras.applications.VGG16(include_top=False, weights=None)
    vgg16.save_weights(str(tmp_path / "vgg16_notop.weights.h5"))
    client.upload_file(str(tmp_path / "vgg16_notop.weights.h5"), BUCKET, "vgg16_notop.weights.h5")
    page = sorted((sample_dir / "images" / "letter").glob("*.tif"))[0]
    client.upload_file(str(page), BUCKET, "pages/letter.tif")
    paths = {"sample": f"s3://{BUCKET}/sample", "records": records, "run": run,
             "weights": f"s3://{BUCKET}/vgg16_notop.weights.h5", "from_s3": str(tmp_path / "from-s3"),
             "pages": [f"s3://{BUCKET}/pages/letter.tif", f"s3://{BUCKET}/pages/missing.tif"],
             "report": f"s3://{BUCKET}/report"}
    done = json.loads(check(_tool(env, REPO / "tests" / "s3_library_run.py",
                                  json.dumps(paths))).stdout.splitlines()[-1])

    for name in shards:  # converted from the bucket by the worker processes
        assert (tmp_path / "from-s3" / name).read_bytes() == (tmp_path / "records" / name).read_bytes()
    assert done["verified"] == {"train": [], "val": []}
    assert done["epochs"] == 2
    client.download_file(BUCKET, "run/final.keras", str(tmp_path / "final.keras"))
    trained = compat.load_model(str(tmp_path / "final.keras")).get_layer("vgg16")
    np.testing.assert_array_equal(trained.get_layer("block3_conv2").get_weights()[0],
                                  vgg16.get_layer("block3_conv2").get_weights()[0])  # frozen
    assert done["evaluated"].startswith("val: 24 records")
    letter, missing = done["predicted"]
    assert letter["path"] == paths["pages"][0] and letter["error"] is None and letter["top"]
    assert missing == {"path": paths["pages"][1], "top": None, "error": "file not found"}
    assert done["exported"] == f"{run}/export/1"
    assert done["reported"][-2:] == [f"s3://{BUCKET}/report/index.html",
                                     f"s3://{BUCKET}/report/report.json"]
    stored = _keys(client, "run/")
    assert {"final.keras", "best.keras", "history.json", "class_names.json",
            "checkpoints/epoch-001.weights.h5", "checkpoints/epoch-002.weights.h5",
            "eval-val/metrics.json", "eval-val/confusion_matrix.png",
            "export/1/saved_model.pb"} <= stored
    assert any(key.startswith("logs/train/events.") for key in stored)
    assert not any(".tmp-" in key or key.startswith("backup/") for key in stored)
    cache = _keys(client, "records/feature_cache/")  # models 1/2's cache: beside the data
    assert sum(key.endswith(".tfrecord") for key in cache) == 4, cache  # train + val, 2 shards
    assert sum(key.endswith(".tfrecord.json") for key in cache) == 4, cache
    assert not any(".tmp-" in key or ".incomplete" in key for key in cache), cache
    assert "index.html" in _keys(client, "report/")


def test_sigterm_with_the_model_dir_on_s3_exits_143_and_the_rerun_resumes(s3, trainer_data):  # noqa: F811
    """A preemptible VM writing to a bucket: SIGTERM mid-run saves the state there and exits 143
    (not tensorflow-io's 134); the same command finishes the run without redoing epoch 1."""
    client, env = s3
    model_dir = f"s3://{BUCKET}/preempted"
    args = base_args(trainer_data(32), model_dir, "--nofeature_cache", "--steps_per_epoch=8",
                     "--backup_every_steps=4", epochs=2)  # SIGTERM within the last epoch
    proc = start_trainer(*args, env=env)
    try:
        wait_for(lambda: "Epoch 2/" in proc.stdout, 180, proc, "epoch 2")
        proc.signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        proc.kill()
    assert proc.returncode == 143, proc.tail()
    assert "state saved" in proc.stderr, proc.tail()
    assert any(key.startswith("backup/") for key in _keys(client, "preempted/"))
    epoch_one = client.head_object(Bucket=BUCKET, Key="preempted/checkpoints/epoch-001.weights.h5")

    again = run_trainer(*args, env=env, timeout=240).check(0)
    assert epoch_headers(again.stdout)[0] >= 2, again.tail()
    stored = _keys(client, "preempted/")
    assert "final.keras" in stored and not any(key.startswith("backup/") for key in stored)
    assert sorted(json.loads(_body(client, "preempted/history.json"))) == ["0", "1"]
    assert client.head_object(Bucket=BUCKET, Key="preempted/checkpoints/epoch-001.weights.h5")[
        "LastModified"] == epoch_one["LastModified"]  # not written again

