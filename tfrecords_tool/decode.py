"""Stage 3: one scanned page -> uint8 [S, S] grayscale pixels, for the converter and predict.

Pillow, not tensorflow-io's `decode_tiff`: both decode every TIFF variant in SPEC.md (LZW,
PackBits, JPEG, raw, Group 4, multi-page, RGB, 16-bit, tiled, big-endian), but Pillow is 1.6-6x
faster on a 1000 px page (LZW 0.45 ms vs 2.5 ms) and raises on a truncated file, where
`decode_tiff` silently returns a partly blank page.

Resizing squashes the page to S x S (aspect not kept, like the reference's `target_size`),
antialiased: every source pixel contributes, so thin strokes of text turn gray instead of
vanishing as with the reference's nearest-neighbour resize. It is Pillow's BILINEAR resize with
`reducing_gap=REDUCING_GAP`: first a box average over whole k x k blocks (`Image.reduce`, k =
int(side / S / REDUCING_GAP)), then the bilinear filter over the remaining >= 1.5x reduction.
On the sample's 1000 px pages to 224 px that takes 0.58 ms instead of the 1.00 ms of bilinear
alone (decoding takes 1.3 ms), and the result differs from it by 0.83 grey levels on average
(`page_stages` of `python -m trainer.bench`; Pillow's documentation of `reducing_gap`: 3.0 is
indistinguishable from plain resampling, 1.0 the fastest).
trainer/export.py repeats exactly these steps in the serving graph.
"""
import io

import numpy as np
from PIL import Image
import tensorflow as tf

REDUCING_GAP = 1.5
_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow opens signed 16-bit as "I"
TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF


class PageError(Exception):
    """A page that cannot be read; the message is the short reason."""


def _read(path):
    if "://" not in str(path):  # a local file: Python's own read costs 0.05 ms, GFile's 0.09 ms
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise PageError("file not found") from None
        except OSError as e:
            raise PageError(f"cannot read file: {e.strerror or e}") from None
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise PageError("file not found") from None
    except tf.errors.OpError as e:
        raise PageError(f"cannot read file: {e.message}") from None


def _to_gray8(image):
    """Any Pillow mode -> mode L; 16-bit samples are scaled (65535 -> 255), not clipped."""
    if image.mode in _16_BIT_MODES:
        samples = np.clip(np.asarray(image, dtype=np.uint32), 0, 65535)
        return Image.fromarray(((samples * 255 + 32767) // 65535).astype(np.uint8))
    return image if image.mode == "L" else image.convert("L")  # convert("L") would copy an L page


def gray_page(data):
    """First page of TIFF file bytes as a Pillow mode L image."""
    if not data:
        raise PageError("empty file")
    # Pillow raises a zoo of exception types on malformed files (OSError, SyntaxError,
    # ValueError, struct.error, DecompressionBombError, ...): any of them means a damaged page.
    try:
        image = Image.open(io.BytesIO(data), formats=["TIFF"])
    except Exception:  # pylint: disable=broad-except
        raise PageError("damaged TIFF header or directory" if data[:4] in TIFF_SIGNATURES
                        else "not a TIFF file") from None
    try:
        image.load()
        return _to_gray8(image)
    except Exception as e:  # pylint: disable=broad-except
        raise PageError(f"damaged image data ({type(e).__name__}: {e})") from None


def resize(gray, image_size):
    """Mode L image -> uint8 [S, S]."""
    return np.asarray(gray.resize((image_size, image_size), Image.BILINEAR,
                                  reducing_gap=REDUCING_GAP))


def load_page(path_or_bytes, image_size):
    """First page of a TIFF file (path, local or gs://, or its bytes) as uint8 [S, S]."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else _read(path_or_bytes)
    return resize(gray_page(data), image_size)
