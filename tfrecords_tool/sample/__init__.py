"""Built-in sample data: synthetic scanned document pages for the 16 RVL-CDIP classes.

The pages are not real documents, but each class has its own coarse layout (letterhead and
signature for letters, a grid of boxes for forms, "From:/To:/Subject:" headers for e-mails,
wavy strokes for handwriting, ...), so a classifier trained on them learns far above chance
even at 64x64 input.  Text is drawn as dark word-sized bars (headings with Pillow's built-in
font), then the page goes through a simulated scanner: slight blur and skew, uneven paper
brightness, gaussian noise, speckles and now and then a dark border or punch holes.

The sample is written in the layout users bring (docs/data.md):

    output_dir/images/<class_folder>/<class_folder>_0000.tif   (TIFF pages, several encodings)
    output_dir/labels.txt    official RVL-CDIP format: `relative/path.tif <label>` per line
    output_dir/labels.csv    header `path,label`, the same rows

Everything is deterministic: the same seed gives byte-identical files.

    python -m tfrecords_tool.sample --output_dir=/tmp/sample --pages_per_class=8

Modules, in the order a page is made: page (drawing primitives), layouts (one per class),
scanner (the scan simulation), tiff (the TIFF variants), dataset (pages and label files on
disk), __main__ (the command line).
"""
from tfrecords_tool.sample.dataset import class_folder, generate, render_page
from tfrecords_tool.sample.tiff import (ALL_ENCODINGS, ENCODINGS, GROUP4_THRESHOLD, TILE_SIZE,
                                        write_tiff)

__all__ = ["ALL_ENCODINGS", "ENCODINGS", "GROUP4_THRESHOLD", "TILE_SIZE", "class_folder",
           "generate", "render_page", "write_tiff"]
