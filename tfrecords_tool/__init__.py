"""Converts scanned TIFF pages (RVL-CDIP and subsets) into sharded TFRecords."""

__version__ = "0.3.0"  # part of every shard fingerprint: bump when shard bytes change
