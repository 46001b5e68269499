"""Converts scanned TIFF pages (RVL-CDIP and subsets) into sharded TFRecords."""

__version__ = "0.1.0"
