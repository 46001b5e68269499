"""Stages 3 and 4 for one page, as the converter's workers run them: decode, then build the
record. A module of its own, so the page pool's forkserver can load it without the CLI."""
from typing import NamedTuple, Optional, Tuple

from tfrecords_tool import decode
from tfrecords_tool import records


class Converted(NamedTuple):
    """One page's outcome."""
    example: Optional[bytes]  # the serialized tf.train.Example; None when skipped
    skip_reason: Optional[str] = None
    warnings: Tuple[str, ...] = ()  # decoder warnings (the page is kept)
    errors: Tuple[str, ...] = ()  # decoder errors of a page kept with keep_decoder_errors


def encode_page(job, image_size, image_format, jpeg_quality, max_page_megapixels,
                keep_decoder_errors):
    """The Converted of job (path to read, label, filename to record)."""
    path, label, filename = job
    try:
        page = decode.decode_page(path, image_size, max_page_megapixels, keep_decoder_errors)
    except decode.PageError as e:
        return Converted(None, str(e))
    return Converted(records.make_example(page.pixels, label, filename, image_format,
                                          jpeg_quality), None, page.warnings, page.errors)
