"""Quiet by default: the tools print their own lines, not TensorFlow's chatter.

Called by the `tfrecords_tool` and `trainer` packages' __init__, before anything imports
TensorFlow, so it runs first for every `python -m tfrecords_tool.X` / `python -m trainer.X`
(Python imports a module's package before the module). TF_CPP_MIN_LOG_LEVEL is read once, when TensorFlow's C++
library loads, which is why this cannot wait for absl to parse the flags.

absl's `--verbosity` / `-v` decide, as the tools' own logging already follows them:
- default (and -v 0, -v -1, ...): TensorFlow's C++ log lines are off (level 3: also the
  cuFFT/cuDNN/cuBLAS "Unable to register factory" errors every start-up prints), TensorFlow's
  Python log lines (its own logger, and what its modules log through absl) show WARNING and
  up, and the KNOWN_HARMLESS warnings are dropped. The tools' own absl lines are untouched.
  tf-keras's "Callback method ... is slow compared to the batch time" stays: it reports a real
  cost of the training loop's callbacks.
- -v 1 or more: everything, as TensorFlow prints it by default.
An explicitly set TF_CPP_MIN_LOG_LEVEL is kept. Errors reach the user as the tools' own
messages and exit status.
"""
import logging
import os
import sys
import warnings

from absl import logging as absl_logging

# (message regex, category) of warnings that say nothing about the user's run.
KNOWN_HARMLESS = (
    # tf-keras 2.16 on any `.keras` file reloaded for evaluation/predict/export: compile=False
    # models never build metrics, and the optimizer state is not needed there.
    (r".*Compiled the loaded model, but the compiled metrics have yet to be built.*", UserWarning),
    (r".*Skipping variable loading for optimizer.*", UserWarning),
)
_CHATTY_LOGGERS = ("tensorflow", "h5py")
_TENSORFLOW_DIRS = (f"{os.sep}tensorflow{os.sep}", f"{os.sep}tf_keras{os.sep}")


def _not_tensorflow_info(record):
    """False for INFO (and lower) records logged by TensorFlow's or tf-keras's own modules
    through absl (e.g. "Sharding callback duration" at every checkpoint)."""
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in _TENSORFLOW_DIRS)
_VERBOSE_FLAGS = ("--verbosity", "-v", "--v")


def verbosity(argv):
    """absl's verbosity as given on the command line (`--verbosity=N`, `-v N`, ...), else 0."""
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if name not in _VERBOSE_FLAGS:
            continue
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        try:
            return int(value)
        except ValueError:
            return 0  # absl rejects it with its own message
    return 0


def configure(argv, environ):
    """Sets TensorFlow's logging for `argv`'s verbosity; call before importing TensorFlow."""
    if verbosity(argv) >= 1:
        return
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    absl_logger = absl_logging.get_absl_logger()  # absl's own logger class, not a plain one
    if _not_tensorflow_info not in absl_logger.filters:
        absl_logger.addFilter(_not_tensorflow_info)
    for message, category in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", message=message, category=category)


def configure_tool():
    """`configure` when Python is starting one of this project's tools, else nothing.

    While `python -m package.module` imports the module's package, sys.argv[0] is "-m" (Python's
    documented behaviour), so a package that sees it is the tool's own: importing the packages
    as a library leaves the caller's settings alone.
    """
    if sys.argv and sys.argv[0] == "-m":
        configure(sys.argv[1:], os.environ)
