"""Tests for trainer.class_weights."""
import json

import pytest

from tfrecords_tool.classes import RVL_CDIP_CLASSES
from trainer.class_weights import class_weights, describe

COUNTS = [100, 400, 50, 25] + [200] * 12  # a skewed 16-class training split


def _write(tmp_path, content):
    path = tmp_path / "weights.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_none():
    assert class_weights("none", COUNTS) is None
    assert describe(None) == "class weights: none"


def test_balanced():
    weights = class_weights("balanced", COUNTS)
    total = sum(COUNTS)
    assert weights == pytest.approx({c: total / (16 * n) for c, n in enumerate(COUNTS)})
    assert sum(weights[c] * n for c, n in enumerate(COUNTS)) == pytest.approx(total)
    line = describe(weights)
    assert "\n" not in line and line.startswith("class weights: letter 1.86, form 0.465, email")


def test_balanced_with_an_empty_class(caplog):
    counts = [0] + COUNTS[1:]
    weights = class_weights("balanced", counts)
    assert weights[0] == 0.0
    assert "no training records of letter" in caplog.text
    total = sum(counts)
    assert weights[1] == pytest.approx(total / (15 * 400))
    assert sum(weights[c] * n for c, n in enumerate(counts)) == pytest.approx(total)
    with pytest.raises(ValueError, match="no records"):
        class_weights("balanced", [0] * 16)


@pytest.mark.parametrize("content", [
    [float(c + 1) for c in range(16)],
    {str(c): c + 1 for c in range(16)},
    {name: c + 1 for c, name in enumerate(RVL_CDIP_CLASSES)},
])
def test_json_file(tmp_path, content):
    weights = class_weights(_write(tmp_path, content), COUNTS)
    assert weights == {c: float(c + 1) for c in range(16)}


@pytest.mark.parametrize("content, message", [
    ([1.0] * 15, "lists 15 weights for 16 classes"),
    ({str(c): 1.0 for c in range(15)}, r"missing: \['15'\]"),
    ({**{name: 1.0 for name in RVL_CDIP_CLASSES}, "receipt": 1.0}, r"unknown: \['receipt'\]"),
    ([1.0] * 15 + [-2.0], "positive numbers; got memo: -2.0"),
    ([1.0] * 15 + [0], "positive numbers; got memo: 0"),
    ([1.0] * 15 + ["2"], "positive numbers; got memo: '2'"),
    ([1.0] * 15 + [True], "positive numbers; got memo: True"),
    ("[1.0, 2.0", "is not valid JSON"),
    ("1.5", "not a JSON float"),
])
def test_bad_json_files(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as error:
        class_weights(path, COUNTS)
    assert path in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        class_weights(str(tmp_path / "nope.json"), COUNTS)


def test_counts_must_match_classes():
    with pytest.raises(ValueError, match="15 class counts for 16 classes"):
        class_weights("balanced", COUNTS[:15])
