"""Converts scanned TIFF pages (RVL-CDIP and subsets) into sharded TFRecords."""

__version__ = "0.3.0"  # part of every shard fingerprint: bump when shard bytes change

from tfrecords_tool import quiet as _quiet  # noqa: E402  (before any import of TensorFlow)

_quiet.configure_tool()
