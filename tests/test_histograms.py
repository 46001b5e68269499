"""trainer.histograms writes the summaries tf.summary.histogram writes (same tags, plugin, rows),
counted in one pass."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import histograms

CASES = {
    "normal": np.random.default_rng(0).normal(size=(3, 3, 64, 32)).astype(np.float32),
    "integers": np.random.default_rng(1).integers(-5, 6, size=1000),  # values on bucket edges
    "one value": np.full((7, 3), 0.25, np.float32),
    "empty": np.zeros((0, 4), np.float32),
    "float16 with a large range": np.array([-1e4, -3.0, 0.0, 2.5, 6e4], np.float16),
}


def _summaries(path):
    out = {}
    for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
            out[value.tag] = (tf.make_ndarray(value.tensor), value.metadata.plugin_data.plugin_name,
                              event.step)
    return out


@pytest.mark.parametrize("case", CASES)
def test_same_summary_as_tensorboards_histogram(tmp_path, case):
    data = tf.constant(CASES[case])
    for writer_dir, write in (("ours", histograms.histogram), ("tensorboard", tf.summary.histogram)):
        writer = tf.summary.create_file_writer(str(tmp_path / writer_dir))
        with writer.as_default(), tf.name_scope("layer"):
            assert write("kernel/histogram", data, step=3)
        writer.close()
    ours, = _summaries(str(next((tmp_path / "ours").iterdir()))).items()
    theirs, = _summaries(str(next((tmp_path / "tensorboard").iterdir()))).items()
    assert ours[0] == theirs[0] == "layer/kernel/histogram"
    (rows, plugin, step), (expected, expected_plugin, expected_step) = ours[1], theirs[1]
    assert (plugin, step) == (expected_plugin, expected_step) == ("histograms", 3)
    assert rows.shape == expected.shape == (histograms.BUCKETS, 3)
    np.testing.assert_allclose(rows[:, :2], expected[:, :2], rtol=1e-12)
    np.testing.assert_array_equal(rows[:, 2], expected[:, 2])
    assert rows[:, 2].sum() == CASES[case].size


def test_nothing_is_written_without_a_writer_or_when_not_recording(tmp_path):
    assert not histograms.histogram("x", tf.ones([3]), step=0)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(), tf.summary.record_if(False):
        assert not histograms.histogram("x", tf.ones([3]), step=0)
