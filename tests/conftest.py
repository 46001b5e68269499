"""Shared test set-up: quiet TensorFlow, Keras 2 (tf-keras), two logical CPU devices, small
generated data."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Before any test touches a device: in-process tests can then mirror over 2 replicas
# (trainer.distribute.make_strategy(cpu_replicas=2) finds them); one-device runs use CPU:0.
CPU_REPLICAS = 2
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * CPU_REPLICAS)


# Test files that share an expensive session fixture run on the same xdist worker.
SHARED_FIXTURE_GROUPS = {"test_diagnose": "model3_runs", "test_report": "model3_runs"}
# The longest files first (on 2 cores, 2026-12-03 18:30: ~90 s, 85 s, 87 s, 55 s, ...), so that
# the workers end together: xdist hands out the groups in collection order.
LONGEST_FIRST = ("test_trainer_cli", "test_diagnose", "test_report", "test_buckets",
                 "test_trainer_resume", "test_predict_export", "test_distributed",
                 "test_feature_cache", "test_training_loop", "test_models", "test_bench",
                 "test_page_pool", "test_callbacks", "test_gpu_check")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(items):
    """With `--dist loadgroup` (scripts/test.sh) each test file goes to one worker as a whole,
    so a module-scoped fixture (a file's training runs) is made once."""
    def rank(item):
        module = item.path.stem
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
    for item in items:
        module = item.path.stem
        item.add_marker(pytest.mark.xdist_group(SHARED_FIXTURE_GROUPS.get(module, module)))


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A small generated RVL-CDIP-like sample (16 classes x 6 pages, longest side 400 px),
    made once per test session: images/<class>/<class>_<i>.tif, labels.txt, labels.csv."""
    from tfrecords_tool import sample

    out = tmp_path_factory.mktemp("sample")
    sample.generate(out, pages_per_class=6, seed=0, max_side=400)
    return out
