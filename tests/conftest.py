"""Shared test set-up: quiet TensorFlow, Keras 2 (tf-keras), small generated data."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
