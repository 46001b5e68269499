"""Per-class loss weights for `model.fit(class_weight=...)`.

`class_weights(mode, class_counts)`, where mode is:
- "none": no weights (None);
- "balanced": n_total / (k * n_c) for class c with n_c training records, from the manifest's
  `class_counts` (no pass over the data); k is the number of classes that have records (all of
  them, normally), so the mean weight per record is 1 and the loss keeps its scale. A class
  without records gets weight 0 and a warning: it never occurs in training, so its weight is
  never used, but Keras wants a weight for every class;
- otherwise the path (local, gs://, s3://) of a JSON file holding the weights: a list of one
  number per class, or a dict keyed by class id ({"0": 2.0, ...}) or by class name
  ({"letter": 2.0, ...}) that names every class. Weights must be positive numbers.
"""
import json
import math

import tensorflow as tf
from absl import logging

from tfrecords_tool.classes import RVL_CDIP_CLASSES


def class_weights(mode, class_counts, class_names=RVL_CDIP_CLASSES):
    """{class id: weight} for `mode` ("none", "balanced" or a JSON file path), or None."""
    if len(class_counts) != len(class_names):
        raise ValueError(f"{len(class_counts)} class counts for {len(class_names)} classes")
    if mode == "none":
        return None
    if mode == "balanced":
        return _balanced(class_counts, class_names)
    return _from_file(mode, class_names)


def _balanced(class_counts, class_names):
    total = sum(class_counts)
    present = sum(1 for n in class_counts if n > 0)
    if not present:
        raise ValueError("balanced class weights: the training split has no records")
    empty = [name for name, n in zip(class_names, class_counts) if n == 0]
    if empty:
        logging.warning("balanced class weights: no training records of %s; weight 0",
                        ", ".join(empty))
    return {c: total / (present * n) if n else 0.0 for c, n in enumerate(class_counts)}


def _from_file(path, class_names):
    if not tf.io.gfile.exists(path):
        raise ValueError(f"class weights file {path!r} does not exist "
                         "(class weights: 'none', 'balanced' or a JSON file)")
    try:
        with tf.io.gfile.GFile(path) as f:
            values = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"class weights file {path!r} is not valid JSON: {e}") from e

    expected = (f"a list of {len(class_names)} weights or a dict keyed by every class id "
                f"('0'..'{len(class_names) - 1}') or class name")
    if isinstance(values, list):
        if len(values) != len(class_names):
            raise ValueError(f"class weights file {path!r} lists {len(values)} weights for "
                             f"{len(class_names)} classes")
        weights = dict(enumerate(values))
    elif isinstance(values, dict):
        ids = {str(c): c for c in range(len(class_names))}
        names = {name: c for c, name in enumerate(class_names)}
        keys = ids if set(values) <= set(ids) else names
        missing = sorted(set(keys) - set(values), key=keys.get)
        unknown = sorted(set(values) - set(keys))
        if missing or unknown:
            raise ValueError(f"class weights file {path!r} must hold {expected}; "
                             f"missing: {missing or 'none'}, unknown: {unknown or 'none'}")
        weights = {keys[k]: w for k, w in values.items()}
    else:
        raise ValueError(f"class weights file {path!r} must hold {expected}, "
                         f"not a JSON {type(values).__name__}")

    bad = {c: w for c, w in weights.items()
           if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)
           or w <= 0}
    if bad:
        raise ValueError(f"class weights file {path!r}: weights must be positive numbers; got "
                         + ", ".join(f"{class_names[c]}: {w!r}" for c, w in sorted(bad.items())))
    return {c: float(weights[c]) for c in range(len(class_names))}


def describe(weights, class_names=RVL_CDIP_CLASSES):
    """One line for the training log: 'class weights: none' or every class's weight."""
    if weights is None:
        return "class weights: none"
    return "class weights: " + ", ".join(
        f"{name} {weights[c]:.3g}" for c, name in enumerate(class_names))
