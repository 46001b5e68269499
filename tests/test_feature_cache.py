"""The shared feature cache (trainer.feature_cache): beside the data by default, reused by model1
and model2 and by reruns with other settings, safe when two runs build it at once, rebuilt
where damaged, in the model dir when the data dir cannot be written, elsewhere with
--feature_cache_dir. In-process, on 32 pages (24 train / 8 val, two shards each)."""
import os
import shutil
import threading

import numpy as np
import pytest

from trainer_fixtures import base_args, epochs_from_output, train_here

PAGES_PER_CLASS = 2


@pytest.fixture(scope="module")
def small_data(sample_dir, tmp_path_factory):
    """`small_data(size)`: a fresh copy (any test may write into it) of 32 pages converted at
    32 or 128 px."""
    from tfrecords_tool.conversion import convert

    root = tmp_path_factory.mktemp("feature_cache_data")
    lines = [line for line in (sample_dir / "labels.txt").read_text().splitlines()
             if int(line.rsplit("_", 1)[1].split(".")[0]) < PAGES_PER_CLASS]
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    for size in (32, 128):
        convert(labels=str(root / "labels.txt"), images_dir=str(sample_dir / "images"),
                output_dir=str(root / f"data{size}"), image_size=size, val_fraction=0.25,
                num_shards=2, workers=0)
    copies = []

    def get(size):
        copies.append(root / f"copy{len(copies)}")
        return shutil.copytree(root / f"data{size}", copies[-1])

    return get


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A local VGG16-without-top weights file (what 'imagenet' or an offline copy gives: the same
    backbone for every model and seed)."""
    import tf_keras as keras

    path = tmp_path_factory.mktemp("weights") / "vgg16_notop.weights.h5"
    keras.utils.set_random_seed(99)
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)) \
        .save_weights(str(path))
    keras.backend.clear_session()
    return path


def _args(data_dir, model_dir, weights, *extra, model="model2", epochs=1):
    return [*base_args(data_dir, model_dir, f"--weights={weights}", "--steps_per_epoch=1",
                       *extra, model=model, epochs=epochs, batch_size=8)]


def _cache_files(root):
    return {p.relative_to(root): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


class _Passes:
    """Counts the VGG16 passes over source shards (feature_cache._shard_features calls)."""

    def __init__(self, monkeypatch, wrap=None):
        from trainer import feature_cache

        self.sources, real = [], feature_cache._shard_features

        def counted(backbone, source, *args):
            self.sources.append(source)
            return (wrap or real)(real, backbone, source, *args)

        monkeypatch.setattr(feature_cache, "_shard_features", counted)


def _backbone(data_dir, weights, model="model2", seed=0):
    import tf_keras as keras
    from trainer import data, models

    keras.utils.set_random_seed(seed)
    image_size = data.read_manifest(str(data_dir), "train")["image_size"]
    model = models.build_model(model, image_size, 16, weights=str(weights))
    return models.split_backbone_head(model)[0]


def _format(data_dir):
    from trainer import data

    return data.read_manifest(str(data_dir), "train")["image_format"]


def _source(data_dir, split="train"):
    """(shard files, records per file) of a split."""
    from trainer import data

    manifest = data.read_manifest(str(data_dir), split)
    files = data.shard_files(str(data_dir), split)
    return files, {f"{data_dir}/{s['file']}": s["num_records"] for s in manifest["shards"]}


# ------------------------------------------------------------------------------------------
# Shared: model2 after model1, other seed, learning rate and batch size: no VGG16 pass.
# ------------------------------------------------------------------------------------------

def test_model2_after_model1_reuses_the_cache_beside_the_data(small_data, weights_file, tmp_path,
                                                              monkeypatch):
    from tfrecords_tool import verification

    data_dir = small_data(128)
    first = train_here(*_args(data_dir, tmp_path / "model1", weights_file, "--seed=1",
                              model="model1")).check(0)
    cache_root = data_dir / "feature_cache"
    assert first.stderr.count("feature cache: built 2 of 2 shards in") == 2, first.tail()
    assert f"in {cache_root}/train-" in first.stderr and f"in {cache_root}/val-" in first.stderr
    before = _cache_files(cache_root)
    assert sorted({p.parts[0].split("-")[0] for p in before}) == ["train", "val"]
    assert len(before) == 8  # 2 splits x 2 shards x (shard + sidecar)

    passes = _Passes(monkeypatch)
    second = train_here(*_args(data_dir, tmp_path / "model2", weights_file, "--seed=5",
                               "--learning_rate=3e-3", "--batch_size=4")).check(0)
    assert passes.sources == []  # no VGG16 pass
    assert "feature cache: built" not in second.stderr, second.tail()
    reused = [line for line in second.stderr.splitlines() if "feature cache: reused" in line]
    assert len(reused) == 2 and all(str(cache_root) in line and " MB)" in line
                                    for line in reused), second.tail()
    assert _cache_files(cache_root) == before  # same files, untouched
    assert not (tmp_path / "model1" / "feature_cache").exists()
    assert not (tmp_path / "model2" / "feature_cache").exists()
    # The converter's tools and the trainer's shard lists ignore the cache directory.
    assert all(not r.problems for r in verification.verify(data_dir=str(data_dir))), \
        [r.problems for r in verification.verify(data_dir=str(data_dir))]


def test_the_key_depends_on_the_backbone_weights_not_on_the_model_or_seed(small_data,
                                                                          weights_file):
    import tf_keras as keras
    from trainer import data, feature_cache

    data_dir = small_data(32)
    manifest, (files, _) = data.read_manifest(str(data_dir), "train"), _source(data_dir)

    def key(weights, seed, model="model2"):
        try:
            return feature_cache.cache_key(manifest, _backbone(data_dir, weights, model, seed),
                                           files)
        finally:
            keras.backend.clear_session()

    shared = key(weights_file, 0)
    assert key(weights_file, 3) == shared
    assert key("none", 1) == key("none", 1) != key("none", 2)  # random weights: per seed
    assert key("none", 1) != shared
    other = data.read_manifest(str(data_dir), "val")
    assert feature_cache.cache_key(other, _backbone(data_dir, weights_file),
                                   _source(data_dir, "val")[0]) != shared


# ------------------------------------------------------------------------------------------
# Two builders at once; damaged shards.
# ------------------------------------------------------------------------------------------

def test_two_builds_racing_into_one_directory_leave_valid_shards(small_data, weights_file,
                                                                 tmp_path, monkeypatch):
    import tensorflow as tf
    from trainer import feature_cache

    data_dir = small_data(32)
    backbone = _backbone(data_dir, weights_file)
    files, counts = _source(data_dir)
    cache_dir = str(tmp_path / "cache" / "train-key")
    lock, together = threading.Lock(), threading.Barrier(2, timeout=60)

    def in_step(real, *args):  # both builders compute every shard, then write it at once
        with lock:
            result = real(*args)
        together.wait()
        return result

    passes = _Passes(monkeypatch, in_step)
    results, failures, done = {}, [], threading.Event()

    def builder(name):
        try:
            results[name] = feature_cache.build(backbone, files, cache_dir, 32, _format(data_dir),
                                                  8, counts)
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)
            together.abort()

    def reader():  # a shard that counts as present is always whole
        while not done.is_set():
            for source, target in zip(files, feature_cache.shard_paths(cache_dir, files)):
                if feature_cache.problem(target, counts[source]) is None:
                    records = sum(1 for _ in tf.data.TFRecordDataset(target))
                    if records != counts[source]:
                        failures.append(AssertionError(f"{target}: {records} records"))

    threads = [threading.Thread(target=builder, args=(n,)) for n in ("a", "b")]
    watcher = threading.Thread(target=reader)
    for thread in threads + [watcher]:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    watcher.join(60)
    assert not failures, failures
    assert len(passes.sources) == 4  # both built both shards
    assert results["a"] == results["b"] == feature_cache.shard_paths(cache_dir, files)
    assert all(feature_cache.problem(t, counts[s]) is None for s, t in zip(files, results["a"]))
    assert sorted(os.listdir(cache_dir)) == sorted(
        name for target in results["a"] for name in (os.path.basename(target),
                                                     os.path.basename(target) + ".json"))
    for source, target in zip(files, results["a"]):  # the features of one VGG16 pass
        cached = np.concatenate([f.numpy() for f, _ in feature_cache.dataset(
            [target], backbone, 8, training=False)])
        np.testing.assert_array_equal(
            cached, backbone.predict(_images(data_dir, source), verbose=0))


def _images(data_dir, source):
    from trainer import data

    manifest = data.read_manifest(str(data_dir), "train")
    return data.image_dataset([source], manifest["image_size"], manifest["image_format"], 8,
                              training=False).map(lambda x, _: x)


def test_a_truncated_shard_and_a_missing_sidecar_are_rebuilt_with_the_same_losses(
        small_data, weights_file, tmp_path):
    data_dir = small_data(32)
    same = ["--deterministic", "--seed=3", "--shuffle_buffer=64", "--steps_per_epoch=3"]
    first = train_here(*_args(data_dir, tmp_path / "one", weights_file, *same, epochs=2)).check(0)
    root = data_dir / "feature_cache"
    truncated = next(root.glob("train-*/train-00001-of-00002.tfrecord"))
    original = truncated.read_bytes()
    truncated.write_bytes(original[:len(original) // 2])
    unlisted = next(root.glob("val-*/val-00000-of-00002.tfrecord"))
    (unlisted.parent / (unlisted.name + ".json")).unlink()

    second = train_here(*_args(data_dir, tmp_path / "two", weights_file, *same, epochs=2)).check(0)
    log = second.stderr
    assert f"feature cache: {truncated} is damaged ({len(original) // 2} bytes, its sidecar " \
           f"says {len(original)}): computing it again" in log, second.tail()
    assert f"feature cache: {unlisted} is damaged (no readable sidecar" in log, second.tail()
    assert log.count("feature cache: built 1 of 2 shards in") == 2, second.tail()
    assert len(truncated.read_bytes()) == len(original)
    losses = [[m["loss"] for _, m in epochs_from_output(run.stdout)] for run in (first, second)]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-6)
    val = [[m["val_loss"] for _, m in epochs_from_output(run.stdout)] for run in (first, second)]
    assert val[0] == pytest.approx(val[1], abs=1e-6)


# ------------------------------------------------------------------------------------------
# Where the cache goes: a read-only data dir, --feature_cache_dir.
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["chmod_555", "blocked"])
def test_a_data_dir_that_cannot_be_written_puts_the_cache_in_the_model_dir(
        small_data, weights_file, tmp_path, how):
    data_dir = small_data(32)
    if how == "chmod_555":
        if os.geteuid() == 0:
            pytest.skip("root writes into a chmod 555 directory")
        data_dir.chmod(0o555)
    else:  # a file where the cache directory would go: writing there fails for any user
        (data_dir / "feature_cache").write_text("not a directory")
    try:
        proc = train_here(*_args(data_dir, tmp_path / "run", weights_file)).check(0)
    finally:
        data_dir.chmod(0o755)
    fallback = tmp_path / "run" / "feature_cache"
    assert f"feature cache: cannot write {data_dir}/feature_cache/train-" in proc.stderr, \
        proc.tail()
    assert f"using {fallback}/train-" in proc.stderr, proc.tail()
    assert len(list(fallback.glob("*/*.tfrecord"))) == 4
    assert len(list(fallback.glob("*/*.tfrecord.json"))) == 4
    assert not (data_dir / "feature_cache").is_dir()


def test_a_complete_cache_in_a_read_only_place_is_reused(small_data, weights_file, tmp_path):
    from trainer import feature_cache

    data_dir = small_data(32)
    backbone = _backbone(data_dir, weights_file)
    files, counts = _source(data_dir)
    shared, own = str(tmp_path / "shared" / "train-k"), str(tmp_path / "own" / "train-k")
    feature_cache.build(backbone, files, shared, 32, _format(data_dir), 8, counts)
    os.chmod(tmp_path / "shared", 0o555)  # read-only for anyone but root: not probed anyway
    try:
        assert feature_cache.choose_dir([shared, own], files, counts) == shared
    finally:
        os.chmod(tmp_path / "shared", 0o755)
    assert not os.path.exists(own)


def test_feature_cache_dir_overrides_the_location(small_data, weights_file, tmp_path):
    data_dir = small_data(32)
    elsewhere = tmp_path / "elsewhere"
    proc = train_here(*_args(data_dir, tmp_path / "run", weights_file,
                             f"--feature_cache_dir={elsewhere}")).check(0)
    assert proc.stderr.count(f"feature cache: built 2 of 2 shards in {elsewhere}/") == 2, \
        proc.tail()
    assert len(list(elsewhere.glob("train-*/train-0000?-of-00002.tfrecord"))) == 2
    assert len(list(elsewhere.glob("val-*/val-0000?-of-00002.tfrecord"))) == 2
    assert not (data_dir / "feature_cache").exists()
    assert not (tmp_path / "run" / "feature_cache").exists()


def test_a_damaged_cache_shard_beside_the_data_is_named_in_the_error(small_data, tmp_path):
    import tensorflow as tf
    from trainer import training

    data_dir = small_data(32)
    good = data_dir / "train-00000-of-00002.tfrecord"
    damaged = data_dir / "feature_cache" / "train-0123456789abcdef" / good.name
    damaged.parent.mkdir(parents=True)
    content = bytearray(good.read_bytes())
    content[len(content) // 2:len(content) // 2 + 64] = bytes(64)
    damaged.write_bytes(bytes(content))
    config = training.TrainConfig(data_dir=str(data_dir), model_dir=str(tmp_path / "run"))
    error = tf.errors.DataLossError(None, None, "corrupted record at 100")
    message = training._data_loss_message(config, error)
    assert message.startswith(f"damaged TFRecord shard {damaged} (corrupted record at 100)"), \
        message


def test_a_killed_builds_temporaries_are_removed_by_the_next_build(small_data, weights_file,
                                                                   tmp_path):
    """Shard and sidecar temporaries an hour old are a killed run's: the next build removes
    them; a fresh one (a live writer's) and the cache itself stay."""
    from trainer import feature_cache

    data_dir = small_data(32)
    backbone = _backbone(data_dir, weights_file)
    files, counts = _source(data_dir)
    cache_dir = tmp_path / "train-k"
    targets = feature_cache.build(backbone, files, str(cache_dir), 32, _format(data_dir), 8, counts)
    shard = os.path.basename(targets[0])
    old = [cache_dir / f"{shard}.tmp-123-dead", cache_dir / f"{shard}.json.incomplete-123-dead"]
    live = cache_dir / f"{shard}.tmp-456-live"
    for path in old + [live]:
        path.write_bytes(b"partial")
    two_hours_ago = os.path.getmtime(live) - 2 * feature_cache.STALE_TEMPORARY_SECONDS
    for path in old:
        os.utime(path, (two_hours_ago, two_hours_ago))
    before = _cache_files(cache_dir)

    again = feature_cache.build(backbone, files, str(cache_dir), 32, _format(data_dir), 8, counts)
    assert again == targets
    assert not any(path.exists() for path in old)
    assert live.exists()
    after = _cache_files(cache_dir)
    assert {k: v for k, v in before.items() if k.name not in {p.name for p in old}} == after
