"""Bucket paths for every tool: gs:// is built into tf.io.gfile, s3:// comes from tensorflow-io.

`atomic_write` is the one way files are written whole or not at all (shards, manifests,
checkpoints, feature cache shards), on local disks and buckets alike.

tensorflow-io 0.37.1, the last release for TF 2.16, aborts every process that used s3:// as it
exits: "pure virtual method called", exit status 134 (tensorflow/io#2039; fixed upstream by
tensorflow/io#2120, after that release). The AWS SDK is shut down by a C++ static destructor
that runs after Python has finished. A batch system would take a finished conversion or
training for a failed one and run it again, so `run` ends such a process with its real exit
status before the static destructors run.
"""
import contextlib
import os
import posixpath
import secrets
import sys
import tempfile
import traceback

from absl import app
from absl import logging
import tensorflow as tf

_s3_used = False


def register(*paths):
    """Makes the file systems of `paths` (None allowed) available to tf.io.gfile."""
    global _s3_used
    if any(path and str(path).startswith("s3://") for path in paths):
        import tensorflow_io  # pylint: disable=g-import-not-at-top,unused-import
        _s3_used = True


@contextlib.contextmanager
def local_file(path):
    """`path` itself when it is local, else a copy in a temporary directory: for readers that
    open local files only (h5py), and because Keras reading a .keras zip from a bucket makes
    many small requests. The copy is one read of the whole object (tf.io.read_file): GFile
    reads through a 512 KB buffer, one ranged request per 512 KB (~130 for a model)."""
    if "://" not in str(path):
        yield path
        return
    with tempfile.TemporaryDirectory() as directory:
        local = os.path.join(directory, posixpath.basename(path))
        with open(local, "wb") as target:
            target.write(tf.io.read_file(path).numpy())
        yield local


@contextlib.contextmanager
def atomic_write(path, temporary=None, local=False):
    """Yields a temporary path to write `path`'s content to; when the block ends, the temporary
    file is renamed to `path` (replacing it), so a reader or a rerun never finds half a file
    under that name. If the block raises, the temporary file is removed and `path` is untouched.

    `temporary` (default `{path}.incomplete`) must be in `path`'s directory: a rename within a
    directory is atomic on local disks and a single copy on buckets. Writers that may race for
    the same `path` pass distinct temporary names. `local=True` is for writers that open local
    files only (h5py): for a bucket `path` the yielded path is in a local temporary directory
    (same file name), copied to `temporary` when the block ends.
    """
    temporary = temporary or f"{path}.incomplete"
    try:
        if local and "://" in str(path):
            with tempfile.TemporaryDirectory() as directory:
                written = os.path.join(directory, posixpath.basename(path))
                yield written
                tf.io.gfile.copy(written, temporary, overwrite=True)
        else:
            yield temporary
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        try:
            if tf.io.gfile.exists(temporary):
                tf.io.gfile.remove(temporary)
        except tf.errors.OpError:  # the first error is the one to report
            pass
        raise


def write_problem(directory):
    """None when a file can be written in `directory` (made if need be), else TensorFlow's or
    the OS's reason in one line. Writes and removes a 4 KiB probe file (a full disk fails it)."""
    probe = f"{directory}/.write-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("x" * 4096)
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        return (getattr(e, "message", None) or str(e)).splitlines()[0]
    return None


def _status(exit_request):
    """The exit status of SystemExit(code), printing a message code as Python would."""
    code = exit_request.code
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def run(main, **run_args):
    """`absl.app.run(main, **run_args)`; after s3:// use, the process exits with main's status
    right away."""
    try:
        app.run(main, **run_args)  # always ends in SystemExit, or in main's exception
    except SystemExit as e:
        if not _s3_used:
            raise
        status = _status(e)
    except BaseException:  # pylint: disable=broad-except
        if not _s3_used:
            raise
        traceback.print_exc()
        status = 1
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access
