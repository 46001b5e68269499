"""Every use of a private TensorFlow / tf_keras API, each with why no public one does it.

tests/test_compat.py fails when an upgrade breaks one of them.
"""
import contextlib

import tensorflow as tf
from tensorflow.python.framework import config as _tf_config


@contextlib.contextmanager
def op_determinism(enabled):
    """Deterministic ops inside the block when `enabled`, as before it afterwards. TF exports
    only `tf.config.experimental.enable_op_determinism`; turning it off again is internal."""
    was_enabled = _tf_config.is_op_determinism_enabled()
    if enabled and not was_enabled:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_enabled:
            _tf_config.disable_op_determinism()
