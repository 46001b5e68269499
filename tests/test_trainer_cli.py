"""The trainer's command line (`python -m trainer.main` flags) on a generated sample: parameter
counts, clear refusals before training, learning well above chance, the saved model, TensorBoard
logs, and the feature cache being exact. Runs go through `train_here` (the same flags, in this
process); the summary and a wrong flag go through real processes."""
import math
import re
import shutil

import numpy as np
import pytest

from trainer import artifacts
from trainer_fixtures import (base_args, epochs_from_output, read_events, run_all, scalars,
                              train_here)
from trainer_fixtures import trainer_data  # noqa: F401  (session fixture)

SPEC_COUNTS = {  # docs/models.md, 224x224 input, 16 classes: total, trainable, non-trainable
    "model1": "model1: total 15,063,664; trainable 348,976; non-trainable 14,714,688",
    "model2": "model2: total 17,935,376; trainable 3,220,688; non-trainable 14,714,688",
    "model3": "model3: total 17,935,376; trainable 12,659,920; non-trainable 5,275,456",
}
CHANCE = 1 / 16


# ------------------------------------------------------------------------------------------
# --summary_only
# ------------------------------------------------------------------------------------------

def test_summary_only_prints_spec_parameter_counts():
    """One process (model3: frozen and fine-tuned VGG16 layers); test_models checks the counts
    of all three models through the library."""
    proc = run_all([["--model=model3", "--weights=none", "--summary_only"]], timeout=180)[0]
    proc.check(0)
    assert SPEC_COUNTS["model3"] in proc.stdout.splitlines(), proc.tail()
    assert "Epoch" not in proc.stdout


# ------------------------------------------------------------------------------------------
# Refusals: a clear message and a non-zero exit before any training, no traceback.
# ------------------------------------------------------------------------------------------

ERROR_CASES = {
    # name: (extra flags, texts the message must contain)
    "unknown_model": (["--model=model9"], ["model9", "model1", "model2", "model3"]),
    "no_such_split": (["--train_split=nope"], ["nope"]),
    "image_size_mismatch": (["--image_size=64"], ["--image_size=64", "32x32"]),
    "weights_missing": (["--weights={tmp}/missing.h5"], ["missing.h5", "does not exist"]),
    "weights_do_not_fit": (["--weights={bad_weights}"], ["bad.weights.h5", "does not fit"]),
    "batch_not_divisible": (["--cpu_replicas=2", "--batch_size=3"],
                            ["--batch_size=3", "not divisible", "2 replicas"]),
    "unwritable_model_dir": (["--model_dir={tmp}/a_file/run"], ["cannot write", "a_file"]),
}


@pytest.fixture(scope="module")
def refusals(trainer_data, tmp_path_factory):  # noqa: F811
    import tf_keras as keras

    tmp = tmp_path_factory.mktemp("refusals")
    data = trainer_data(32)
    (tmp / "a_file").write_text("a regular file, not a directory\n")
    bad_weights = tmp / "bad.weights.h5"  # a valid weights file, of another model
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save_weights(str(bad_weights))

    runs = {}
    for name, (flags, _) in ERROR_CASES.items():
        args = base_args(data, tmp / f"run_{name}",
                         *[f.format(tmp=tmp, bad_weights=bad_weights) for f in flags], epochs=1)
        # A wrong flag value is absl's to refuse: that one goes through the real command line.
        runs[name] = run_all([args], timeout=120)[0] if name == "unknown_model" else train_here(*args)
    return tmp, runs


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_refuses_with_clear_message_before_training(refusals, case):
    tmp, procs = refusals
    proc = procs[case]
    assert proc.returncode not in (0, None), proc.tail()
    assert proc.returncode == 2, proc.tail()  # usage or data error, flags included
    for text in ERROR_CASES[case][1]:
        assert text in proc.stderr, f"{text!r} not in the message\n{proc.tail()}"
    assert "Traceback" not in proc.stderr, proc.tail()
    assert "Epoch 1/" not in proc.stdout, proc.tail()
    run_dir = tmp / f"run_{case}"
    assert not (run_dir / "final.keras").exists()
    assert not list(run_dir.glob("checkpoints/*"))


# ------------------------------------------------------------------------------------------
# Learning on the sample, the saved model, TensorBoard.
# ------------------------------------------------------------------------------------------

LEARN_EPOCHS = 5  # of 54 steps (6 passes over the 144 training pages): fewer epoch ends to save


@pytest.fixture(scope="module")
def learning_runs(trainer_data, tmp_path_factory):  # noqa: F811
    """Three runs at once: model2 at 64 px with random VGG16 weights (--weights=none) and
    with a local weights file (the imagenet code path), and model1 at 128 px, briefly."""
    import tf_keras as keras

    tmp = tmp_path_factory.mktemp("learning")
    keras.utils.set_random_seed(1234)  # not the trainer's seed: other weights than --weights=none
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    weights_file = tmp / "vgg16_random_notop.h5"
    vgg.save_weights(str(weights_file))
    del vgg
    keras.backend.clear_session()

    common = ["--learning_rate=3e-3", "--deterministic", "--seed=1", "--steps_per_epoch=54"]
    runs = {
        "model2_none": base_args(trainer_data(64), tmp / "model2_none", *common,
                                 "--histogram_freq=1", epochs=LEARN_EPOCHS),
        "model2_file": [*base_args(trainer_data(64), tmp / "model2_file", *common,
                                   epochs=LEARN_EPOCHS), f"--weights={weights_file}"],
        "model1": base_args(trainer_data(128), tmp / "model1", "--deterministic", "--seed=1",
                            model="model1", epochs=4),
    }
    procs = [train_here(*args) for args in runs.values()]
    yield {name: (proc, tmp / name) for name, proc in zip(runs, procs)}, weights_file, trainer_data
    for name in runs:  # ~60 MB of weights per epoch checkpoint
        shutil.rmtree(tmp / name / "checkpoints", ignore_errors=True)


@pytest.mark.parametrize("run", ["model2_none", "model2_file"])
def test_model2_learns_well_above_chance(learning_runs, run):
    proc, model_dir = learning_runs[0][run]
    proc.check(0)
    epochs = epochs_from_output(proc.stdout)
    assert [e for e, _ in epochs] == list(range(1, LEARN_EPOCHS + 1)), proc.tail()
    first, last = epochs[0][1], epochs[-1][1]
    best = max(m["val_accuracy"] for _, m in epochs)
    assert last["loss"] < first["loss"] - 0.5, epochs
    assert best >= 4 * CHANCE, epochs          # val: 48 pages, chance 1/16
    assert last["val_accuracy"] >= 3 * CHANCE, epochs
    assert (model_dir / "final.keras").exists() and (model_dir / "best.keras").exists()
    assert "feature cache on" in proc.stderr


def test_weights_file_is_the_vgg16_of_the_trained_model(learning_runs):
    """--weights=PATH loads the file (like imagenet would), and the frozen VGG16 stays as loaded."""
    import tf_keras as keras

    runs, weights_file, _ = learning_runs
    runs["model2_file"][0].check(0)
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    reference.load_weights(str(weights_file))
    for run, same in (("model2_file", True), ("model2_none", False)):
        model = artifacts.load_model(str(runs[run][1]))
        vgg = model.get_layer("vgg16")
        for name in ("block1_conv1", "block5_conv3"):
            equal = np.array_equal(vgg.get_layer(name).get_weights()[0],
                                   reference.get_layer(name).get_weights()[0])
            assert equal == same, (run, name)


def test_model1_trains_at_128(learning_runs):
    proc, model_dir = learning_runs[0]["model1"]
    proc.check(0)
    epochs = epochs_from_output(proc.stdout)
    assert [e for e, _ in epochs] == [1, 2, 3, 4], proc.tail()
    assert epochs[-1][1]["loss"] < epochs[0][1]["loss"], epochs
    assert (model_dir / "final.keras").exists()
    assert "training model1 on 72 records" in proc.stderr


@pytest.mark.parametrize("run", ["model2_none", "model1"])
def test_final_model_reloads_and_scores_like_the_last_epoch(learning_runs, run):
    """final.keras reloads (safe mode) and, on the val split, gives the last epoch's val_loss and
    val_accuracy: the saved model is the trained one, with the training-time preprocessing."""
    import tensorflow as tf
    import tf_keras as keras
    import trainer.models  # noqa: F401
    from trainer import data

    runs, _, trainer_data_ = learning_runs
    proc, model_dir = runs[run]
    proc.check(0)
    last = epochs_from_output(proc.stdout)[-1][1]
    size = 128 if run == "model1" else 64
    data_dir = trainer_data_(size)
    manifest = data.read_manifest(str(data_dir), "val")
    val = data.image_dataset(data.shard_files(str(data_dir), "val"), size, manifest["image_format"], 16,
                             training=False)
    model = keras.models.load_model(model_dir / "final.keras", safe_mode=True)
    labels = np.concatenate([y.numpy() for _, y in val])
    probs = model.predict(val.map(lambda x, y: x), verbose=0)
    assert probs.shape == (24 if run == "model1" else 48, 16)
    accuracy = float(np.mean(np.argmax(probs, 1) == labels))
    loss = float(tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probs)))
    assert accuracy == pytest.approx(last["val_accuracy"], abs=1 / len(labels) + 1e-6)
    assert loss == pytest.approx(last["val_loss"], rel=2e-3, abs=2e-3)


def test_tensorboard_scalars_and_gradient_histograms(learning_runs):
    proc, model_dir = learning_runs[0]["model2_none"]
    proc.check(0)
    logs = model_dir / "logs"
    steps = list(range(LEARN_EPOCHS))
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate"):
        values = scalars(logs / "train", tag)
        assert [s for s, _ in values] == steps, tag
        assert all(math.isfinite(v) for _, v in values), tag
    assert [v for _, v in scalars(logs / "train", "epoch_learning_rate")] == \
        pytest.approx([3e-3] * LEARN_EPOCHS)
    for tag in ("epoch_loss", "epoch_accuracy"):
        assert [s for s, _ in scalars(logs / "validation", tag)] == steps, tag
    # Step-level learning rate at the start and every --log_every_steps (50) optimizer steps:
    # 5 epochs x 54 steps.
    assert scalars(logs / "train", "batch_learning_rate") == [
        (s, pytest.approx(3e-3)) for s in (0, 50, 100, 150, 200, 250)]
    # The event loss is the one printed.
    printed = [m["loss"] for _, m in epochs_from_output(proc.stdout)]
    assert [v for _, v in scalars(logs / "train", "epoch_loss")] == pytest.approx(printed, abs=1e-4)

    events = read_events(logs / "gradients")
    # weights: the Keras TensorBoard callback's (histogram_freq), `<name>_0/histogram` in train/
    events.update({f"weights/{tag[:-len('_0/histogram')]}": values
                   for tag, values in read_events(logs / "train").items()
                   if tag.endswith("_0/histogram")})
    model = artifacts.load_model(str(model_dir))
    variables = [w.name.split(":")[0] for w in model.trainable_weights]
    assert len(variables) == 6  # conv_fc1, conv_fc2, predictions: kernel and bias
    for name in variables:
        for kind in ("gradients", "weights"):
            tag = f"{kind}/{name}"
            assert tag in events, (tag, sorted(events))
            assert [s for s, _, _ in events[tag]] == steps, tag
            for _, histogram, plugin in events[tag]:
                assert plugin == "histograms"
                assert histogram.ndim == 2 and histogram.shape[1] == 3
                assert np.all(np.isfinite(histogram)), tag
                assert histogram[:, 2].sum() > 0, tag  # counts
    norms = [float(v) for _, v, _ in events["gradients/global_norm"]]
    assert all(math.isfinite(n) and n > 0 for n in norms)


# ------------------------------------------------------------------------------------------
# The feature cache is exact; augmentation turns it off; old epoch checkpoints go.
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache_runs(trainer_data, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("cache")
    data = trainer_data(32)
    same = ["--deterministic", "--seed=7", "--shuffle_buffer=64"]
    runs = {
        "cache": base_args(data, tmp / "cache", *same, "--feature_cache", epochs=3),
        # Also the run that keeps only its 2 newest epoch checkpoints.
        "nocache": base_args(data, tmp / "nocache", *same, "--nofeature_cache",
                             "--keep_epoch_checkpoints=2", epochs=3),
        "augment": base_args(data, tmp / "augment", "--augment=light", "--steps_per_epoch=2",
                             epochs=1),
    }
    procs = [train_here(*args) for args in runs.values()]
    yield {name: (proc, tmp / name) for name, proc in zip(runs, procs)}
    shutil.rmtree(tmp, ignore_errors=True)


def test_feature_cache_gives_the_same_losses_as_images(cache_runs, trainer_data):  # noqa: F811
    (cached, cached_dir), (images, images_dir) = cache_runs["cache"], cache_runs["nocache"]
    cached.check(0)
    images.check(0)
    assert "feature cache on" in cached.stderr
    assert "feature cache off: --nofeature_cache" in images.stderr
    shared = trainer_data(32) / "feature_cache"  # beside the data: built, or reused from a run
    for split in ("train", "val"):                # of the same backbone before
        assert re.search(rf"feature cache: (built 2 of 2 shards in|reused) "
                         rf"{re.escape(str(shared))}/{split}-", cached.stderr), cached.tail()
    assert list(shared.glob("train-*/train-0000?-of-00002.tfrecord"))
    assert not (cached_dir / "feature_cache").exists()
    assert not (images_dir / "feature_cache").exists()
    for split in ("train", "validation"):
        for tag in ("epoch_loss", "epoch_accuracy"):
            a, b = scalars(cached_dir / "logs" / split, tag), scalars(images_dir / "logs" / split, tag)
            assert [s for s, _ in a] == [s for s, _ in b] == [0, 1, 2], (split, tag)
            assert [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-4, abs=1e-5), \
                (split, tag, a, b)
    printed_a = [m["loss"] for _, m in epochs_from_output(cached.stdout)]
    printed_b = [m["loss"] for _, m in epochs_from_output(images.stdout)]
    assert len(printed_a) == 3 and printed_a == pytest.approx(printed_b, abs=1e-4)
    # The losses change from epoch to epoch: the comparison is not between constants.
    assert len({round(v, 4) for v in printed_a}) == 3


def test_feature_cache_trains_the_same_weights(cache_runs):
    heads = []
    for run in ("cache", "nocache"):
        proc, model_dir = cache_runs[run]
        proc.check(0)
        model = artifacts.load_model(str(model_dir))
        heads.append([model.get_layer(n).get_weights() for n in ("conv_fc1", "predictions")])
    for a, b in zip(*heads):
        for wa, wb in zip(a, b):
            np.testing.assert_allclose(wa, wb, rtol=1e-3, atol=1e-5)


def test_augmentation_turns_the_cache_off_and_says_why(cache_runs):
    proc, model_dir = cache_runs["augment"]
    proc.check(0)
    assert "feature cache off: --augment=light" in proc.stderr, proc.tail()
    assert not (model_dir / "feature_cache").exists()
    assert (model_dir / "final.keras").exists()


def test_only_the_newest_epoch_checkpoints_are_kept(cache_runs):
    proc, model_dir = cache_runs["nocache"]
    proc.check(0)
    kept = sorted(p.name for p in (model_dir / "checkpoints").glob("epoch-*.weights.h5"))
    assert kept == ["epoch-002.weights.h5", "epoch-003.weights.h5"]


def test_model3_trains_from_the_command_line_with_two_learning_rates(trainer_data, tmp_path):  # noqa: F811
    """model3 fine-tunes block4_conv3..block5 at --backbone_learning_rate, the head at
    --learning_rate: with the backbone rate at 0 the VGG16 weights stay, the head's move."""
    import tf_keras as keras
    import trainer.models

    model_dir = tmp_path / "m3"
    train_here(*base_args(trainer_data(32), model_dir, "--steps_per_epoch=3",
                           "--backbone_learning_rate=0", model="model3", epochs=1),
                ).check(0)
    trained = artifacts.load_model(str(model_dir))
    keras.utils.set_random_seed(0)  # as trainer.main does before building: the same initial weights
    initial = trainer.models.build_model("model3", 32, 16, "none")
    vgg_after, vgg_before = trained.get_layer("vgg16"), initial.get_layer("vgg16")
    np.testing.assert_array_equal(vgg_after.get_layer("block5_conv3").get_weights()[0],
                                  vgg_before.get_layer("block5_conv3").get_weights()[0])
    assert not np.array_equal(trained.get_layer("conv_fc1").get_weights()[0],
                              initial.get_layer("conv_fc1").get_weights()[0])


def test_cosine_schedule_with_warm_up_drives_both_optimizers(trainer_data, tmp_path):  # noqa: F811
    """--lr_schedule=cosine --warmup_steps=4 over 2 epochs x 3 steps: each optimizer's rate is
    its peak x the curve at the optimizer's step; the model saved with the schedule loads."""
    model_dir = tmp_path / "cosine"
    train_here(*base_args(trainer_data(32), model_dir, "--steps_per_epoch=3", "--lr_schedule=cosine",
                           "--warmup_steps=4", "--learning_rate=1e-3", "--backbone_learning_rate=1e-5",
                           "--log_every_steps=1", model="model3", epochs=2),
                ).check(0)
    # Logged at the start and after s optimizer steps (1..6): the rate of the next step, at step
    # counter s: warm-up (s + 1) / 4 for s < 4, then a cosine over the remaining 2 steps.
    curve = [0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.0]
    logs = model_dir / "logs" / "train"
    assert scalars(logs, "batch_learning_rate") == [
        (s, pytest.approx(1e-3 * c, abs=1e-9)) for s, c in zip(range(0, 7), curve)]
    assert scalars(logs, "batch_backbone_learning_rate")[5:] == [
        (s, pytest.approx(1e-5 * c, abs=1e-12)) for s, c in zip((5, 6), curve[5:])]
    assert [v for _, v in scalars(logs, "epoch_learning_rate")] == pytest.approx(
        [1e-3 * curve[3], 1e-3 * curve[6]], abs=1e-9)
    assert [v for _, v in scalars(logs, "epoch_backbone_learning_rate")] == pytest.approx(
        [1e-5 * curve[3], 1e-5 * curve[6]], abs=1e-12)
    assert artifacts.load_model(str(model_dir)).output_shape == (None, 16)
