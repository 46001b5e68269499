"""Stage 3: one scanned page -> uint8 [S, S] grayscale pixels, for the converter and predict.

Two decoders, chosen by the page's TIFF tags before any pixel is decoded:
- Pillow (its bundled libtiff) for what scanners write: 1-bit and 8-bit gray, palette, RGB and
  YCbCr with no extra samples, compressed as none, CCITT RLE/G3/G4, LZW, JPEG, Deflate, PackBits
  or LZMA. It is the fast path (gray LZW page of 1000 px: 1.3 ms), and the only one that reads
  CCITT fax pages.
- tifffile with imagecodecs for the rest: ZSTD, WebP, LERC, JPEG 2000, ..., and sample layouts
  Pillow reads wrongly or not at all (2/4/12/16/32-bit integers, signed integers, floats, alpha,
  CMYK). Its samples are mapped to grey here by their real value range (`samples_to_gray`).
A page neither can read faithfully is refused with the true reason (`unsupported compression
JBIG`, `unsupported photometric interpretation LOGLUV`), never decoded into wrong pixels.

Everything a decoder says while reading a page -- libtiff writes to file descriptor 2, Pillow
and tifffile warn through Python -- is captured per page (`_captured_messages`). libtiff error
lines (for a page it can still half-decode, such as G4 data overwritten with noise) make the page
a `PageError` with that message, unless the caller keeps such pages; warnings travel with the
pixels. Pages above `max_megapixels` are refused before decoding, which bounds a worker's
memory: the decoded samples plus one byte per pixel of gray (a 192 megapixel Group 4 page
peaks at 0.4 GB; at the default limit of 256, an 8-bit gray page needs 0.5 GB, 8-bit RGB 1 GB).

Resizing squashes the page to S x S (aspect not kept, like the reference's `target_size`),
antialiased: every source pixel contributes, so thin strokes of text turn gray instead of
vanishing as with the reference's nearest-neighbour resize. It is Pillow's BILINEAR resize with
`reducing_gap=REDUCING_GAP`: first a box average over whole k x k blocks (`Image.reduce`, k =
int(side / S / REDUCING_GAP)), then the bilinear filter over the remaining >= 1.5x reduction.
On the sample's 1000 px pages to 224 px that takes 0.58 ms instead of the 1.00 ms of bilinear
alone, and the result differs from it by 0.83 grey levels on average (`page_stages` of
`python -m trainer.bench`; Pillow's documentation of `reducing_gap`: 3.0 is indistinguishable
from plain resampling, 1.0 the fastest). trainer/export.py repeats exactly these steps in the
serving graph.
"""
import contextlib
import io
import logging
import os
import tempfile
from typing import NamedTuple, Tuple
import warnings

import numpy as np
from PIL import Image
from PIL import TiffImagePlugin
import tifffile

REDUCING_GAP = 1.5
DEFAULT_MAX_PAGE_MEGAPIXELS = 256
TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF
# Our own bound (max_megapixels) replaces Pillow's decompression-bomb limit (179 megapixels),
# which refuses valid 12000 x 16000 pages at 1000 dpi.
Image.MAX_IMAGE_PIXELS = None

# TIFF tags and values (TIFF 6.0 specification).
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_STRIP_OFFSETS, _SAMPLES, _STRIP_BYTES, _TILE_OFFSETS, _TILE_BYTES = 273, 277, 279, 324, 325
_INK_SET, _EXTRA_SAMPLES, _SAMPLE_FORMAT, _SMIN, _SMAX = 332, 338, 339, 340, 341
_MINISWHITE, _MINISBLACK, _RGB, _PALETTE, _SEPARATED, _YCBCR, _CIELAB = 0, 1, 2, 3, 5, 6, 8
_UINT, _INT, _FLOAT = 1, 2, 3
_ASSOCIATED_ALPHA, _UNASSOCIATED_ALPHA = 1, 2
# Compressions the bundled libtiff of the pinned Pillow decodes (ZSTD and WebP are listed by
# Pillow but not built in: "ZSTD compression support is not configured").
_PILLOW_COMPRESSIONS = {1, 2, 3, 4, 5, 6, 7, 8, 32773, 32946, 34925}
_PILLOW_PHOTOMETRICS = {_MINISWHITE, _MINISBLACK, _RGB, _PALETTE, _YCBCR}
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow's convert("L")


class PageError(Exception):
    """A page that cannot be read; the message is the short reason."""


class DecodedPage(NamedTuple):
    pixels: np.ndarray  # uint8 [S, S]
    warnings: Tuple[str, ...] = ()  # what the decoder warned about
    errors: Tuple[str, ...] = ()  # decoder errors of a page kept with keep_decoder_errors


def _read(path):
    if "://" not in str(path):  # a local file: Python's own read costs 0.05 ms, GFile's 0.09 ms
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise PageError("file not found") from None
        except OSError as e:
            raise PageError(f"cannot read file: {e.strerror or e}") from None
    # Buckets only; a worker started by the page pool's forkserver registers s3:// itself.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfrecords_tool import filesystems  # pylint: disable=import-outside-toplevel
    filesystems.register(path)
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise PageError("file not found") from None
    except tf.errors.OpError as e:
        raise PageError(f"cannot read file: {e.message}") from None


class _Messages:
    """What decoders said during one page: libtiff's stderr lines and Python warnings."""

    def __init__(self):
        self.lines = []

    def errors(self):
        return [line for line in self.lines if not _is_warning(line)]

    def warnings(self):
        return [line for line in self.lines if _is_warning(line)]


def _is_warning(line):
    # libtiff's default handler writes "MODULE: Warning, MESSAGE"; errors as "MODULE: MESSAGE"
    return ": Warning, " in line or line.startswith("warning: ")


class _LogCapture(logging.Handler):

    def __init__(self, messages):
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record):
        level = "warning" if record.levelno < logging.ERROR else "error"
        self.messages.lines.append(f"{level}: {record.getMessage()}")


_stderr_fd = None  # an unlinked temporary file that fd 2 points at while a page decodes


@contextlib.contextmanager
def _captured_messages():
    """Redirects file descriptor 2 (libtiff's default handlers print there) and Python
    warnings into a _Messages for the duration; restores both."""
    global _stderr_fd
    if _stderr_fd is None:
        _stderr_fd, name = tempfile.mkstemp(prefix="decoder-messages-")
        os.unlink(name)
    messages, saved = _Messages(), os.dup(2)
    handler = _LogCapture(messages)
    tifffile_log = logging.getLogger("tifffile")
    tifffile_log.addHandler(handler)
    propagate, tifffile_log.propagate = tifffile_log.propagate, False
    try:
        os.dup2(_stderr_fd, 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        tifffile_log.removeHandler(handler)
        tifffile_log.propagate = propagate
        size = os.fstat(_stderr_fd).st_size
        if size:
            text = os.pread(_stderr_fd, size, 0).decode("utf-8", "replace")
            os.ftruncate(_stderr_fd, 0)
            os.lseek(_stderr_fd, 0, os.SEEK_SET)  # fd 2 shared this offset
            # Pillow hands libtiff its data as "tempfile.tif"; the page's path replaces it later.
            messages.lines.extend(line.removeprefix("tempfile.tif: ").strip()
                                  for line in text.splitlines() if line.strip())
        messages.lines.extend(f"warning: {w.message}" for w in caught)


class _Layout(NamedTuple):
    width: int
    height: int
    bits: Tuple[int, ...]
    sample_format: int
    photometric: int
    extra_samples: Tuple[int, ...]
    compression: int
    ink_set: int
    tiled: bool
    data_ends: Tuple[int, ...]  # where each strip or tile ends in the file


def _open(data):
    """(Pillow image or None, the first page's layout from its TIFF directory).

    Pillow opens the pages it has a mode for (its directory is reused: 0.07 ms less per page);
    for the others its directory parser alone reads the tags.
    """
    image = None
    try:
        image = Image.open(io.BytesIO(data), formats=["TIFF"])
        directory = image.tag_v2
    except Exception:  # pylint: disable=broad-except
        try:
            header = data[:16] if data[:4] in TIFF_SIGNATURES[2:] else data[:8]
            directory = TiffImagePlugin.ImageFileDirectory_v2(header)
            stream = io.BytesIO(data)
            stream.seek(directory.next)
            directory.load(stream)
        except Exception:  # pylint: disable=broad-except
            raise PageError("damaged TIFF header or directory") from None
    return image, _layout(directory)


def _layout(directory):
    try:

        def values(tag, default):
            value = directory.get(tag, default)
            return tuple(value) if isinstance(value, (tuple, list)) else (value,)

        samples = values(_SAMPLES, 1)[0]
        bits = values(_BITS, 1)
        tiled = _TILE_OFFSETS in directory
        offsets = values(_TILE_OFFSETS if tiled else _STRIP_OFFSETS, 0)
        counts = values(_TILE_BYTES if tiled else _STRIP_BYTES, 0)
        return _Layout(
            width=int(directory[_WIDTH]), height=int(directory[_LENGTH]),
            bits=bits * samples if len(bits) == 1 else bits,
            sample_format=values(_SAMPLE_FORMAT, _UINT)[0],
            photometric=values(_PHOTOMETRIC, _MINISBLACK)[0],
            extra_samples=values(_EXTRA_SAMPLES, None) if _EXTRA_SAMPLES in directory else (),
            compression=values(_COMPRESSION, 1)[0], ink_set=values(_INK_SET, 1)[0], tiled=tiled,
            data_ends=tuple(int(o) + int(c) for o, c in zip(offsets, counts)))
    except Exception:  # pylint: disable=broad-except  (a zoo of types on malformed directories)
        raise PageError("damaged TIFF header or directory") from None


def _name(enum, value):
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def _check(layout, size, max_megapixels):
    megapixels = layout.width * layout.height / 1e6
    if megapixels > max_megapixels:
        raise PageError(f"page is {megapixels:.0f} megapixels, above "
                        f"--max_page_megapixels={max_megapixels:g}")
    if layout.data_ends and max(layout.data_ends) > size:
        raise PageError(f"truncated {'tile' if layout.tiled else 'strip'} data (the file has "
                        f"{size} bytes, its image data runs to byte {max(layout.data_ends)})")


def _pillow_reads(layout):
    return (layout.compression in _PILLOW_COMPRESSIONS and not layout.extra_samples
            and layout.photometric in _PILLOW_PHOTOMETRICS and layout.sample_format == _UINT
            and len(set(layout.bits)) == 1 and layout.bits[0] in (1, 8)
            and (layout.bits[0] == 8 or layout.photometric in (_MINISWHITE, _MINISBLACK)))


def _pillow_gray(image):
    image.load()
    return image if image.mode == "L" else image.convert("L")  # convert("L") copies an L page


def _tifffile_samples(data, layout):
    if layout.compression not in tifffile.TIFF.DECOMPRESSORS:
        raise PageError("unsupported compression "
                        f"{_name(tifffile.COMPRESSION, layout.compression)}")
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        page = tiff.pages[0]
        samples = page.asarray()
        colormap = page.colormap if layout.photometric == _PALETTE else None
        tags = page.tags
        value_range = (tags[_SMIN].value, tags[_SMAX].value) if _SMIN in tags and _SMAX in tags \
            else None
    if samples.ndim == 3 and samples.shape[0] == len(layout.bits) != samples.shape[-1]:
        samples = np.moveaxis(samples, 0, -1)  # planar (separate) configuration
    return samples, colormap, value_range


def _unit_range(samples, layout, value_range):
    """Samples as floats in [0, 1] by their real range: floats by [0, 1] or SMin/SMaxSampleValue,
    integers by their bit depth (signed ones by their whole range)."""
    bits = layout.bits[0]
    if layout.sample_format == _FLOAT:
        low, high = (np.min(value_range[0]), np.max(value_range[1])) if value_range else (0, 1)
        if not high > low:
            raise PageError(f"float samples with an empty value range [{low}, {high}]")
        return np.clip((samples.astype(np.float32) - low) / (high - low), 0, 1)
    if layout.sample_format == _INT:
        return (samples.astype(np.float32) + 2.0 ** (bits - 1)) / (2.0 ** bits - 1)
    if layout.sample_format == _UINT:
        return samples.astype(np.float32) / (2.0 ** bits - 1)
    raise PageError(f"unsupported sample format {layout.sample_format}")


def samples_to_gray(samples, layout, colormap=None, value_range=None, band_rows=256):
    """Decoded samples ([H, W] or [H, W, C]) -> uint8 [H, W] grey by the samples' meaning:
    photometric interpretation, value range, alpha composited on white paper.

    Works in bands of rows, so the float arithmetic adds little to the samples' own memory.
    """
    if samples.ndim == 2:
        samples = samples[..., None]
    photometric = layout.photometric
    colour = {_MINISWHITE: 1, _MINISBLACK: 1, _RGB: 3, _PALETTE: 1, _SEPARATED: 4, _YCBCR: 3,
              _CIELAB: 3}.get(photometric)  # colour samples before any alpha
    if colour is None or (photometric == _SEPARATED and (layout.ink_set != 1
                                                         or samples.shape[-1] < 4)):
        raise PageError("unsupported photometric interpretation "
                        f"{_name(tifffile.PHOTOMETRIC, photometric)}")
    if len(set(layout.bits)) != 1:
        raise PageError(f"unsupported mixed bits per sample {layout.bits}")
    return np.concatenate([_band_to_gray(samples[row:row + band_rows], layout, colour, colormap,
                                         value_range)
                           for row in range(0, samples.shape[0], band_rows)])


def _band_to_gray(samples, layout, colour, colormap, value_range):
    photometric = layout.photometric
    if photometric == _PALETTE:
        rgb = colormap[:, samples[..., 0]].transpose(1, 2, 0).astype(np.float32) / 65535
        gray = rgb @ _LUMA
    else:
        values = _unit_range(samples, layout, value_range)
        if photometric == _MINISBLACK:
            gray = values[..., 0]
        elif photometric == _MINISWHITE:
            gray = 1 - values[..., 0]
        elif photometric == _RGB:
            gray = values[..., :3] @ _LUMA
        elif photometric == _SEPARATED:  # CMYK inks on white paper
            gray = ((1 - values[..., :3]) * (1 - values[..., 3:4])) @ _LUMA
        else:  # YCbCr: Y is the luma; CIELab: L* is the lightness
            gray = values[..., 0]
        alpha_kind = layout.extra_samples[0] if layout.extra_samples else None
        if alpha_kind in (_ASSOCIATED_ALPHA, _UNASSOCIATED_ALPHA):
            alpha = values[..., colour]
            if alpha_kind == _ASSOCIATED_ALPHA and photometric != _MINISWHITE:
                gray = gray + (1 - alpha)  # premultiplied: the colour already carries alpha
            else:
                gray = gray * alpha + (1 - alpha)
    return np.floor(np.clip(gray, 0, 1) * 255 + 0.5).astype(np.uint8)


def gray_page(data, max_megapixels=DEFAULT_MAX_PAGE_MEGAPIXELS, keep_decoder_errors=False):
    """First page of TIFF file bytes -> (Pillow mode L image, warnings, kept errors)."""
    if not data:
        raise PageError("empty file")
    if data[:4] not in TIFF_SIGNATURES:
        raise PageError("not a TIFF file")
    failure = None
    with _captured_messages() as messages:
        try:
            image, layout = _open(data)
            _check(layout, len(data), max_megapixels)
            if image is not None and _pillow_reads(layout):
                gray = _pillow_gray(image)
            else:
                samples, colormap, value_range = _tifffile_samples(data, layout)
                gray = Image.fromarray(samples_to_gray(samples, layout, colormap, value_range))
        except PageError as e:
            failure = str(e)
        except Exception as e:  # pylint: disable=broad-except  (decoders raise many types)
            failure = f"damaged image data ({type(e).__name__}: {e})"
    errors = messages.errors()
    if failure and errors and failure.startswith("damaged image data"):
        failure = f"damaged image data: {'; '.join(errors)}"  # libtiff says more than Pillow
    if failure:
        raise PageError(failure)
    if errors and not keep_decoder_errors:
        raise PageError(f"decoder error: {'; '.join(errors)}")
    return gray, tuple(messages.warnings()), tuple(errors)


def resize(gray, image_size):
    """Mode L image -> uint8 [S, S]."""
    return np.asarray(gray.resize((image_size, image_size), Image.BILINEAR,
                                  reducing_gap=REDUCING_GAP))


def decode_page(path_or_bytes, image_size, max_megapixels=DEFAULT_MAX_PAGE_MEGAPIXELS,
                keep_decoder_errors=False):
    """First page of a TIFF file (path, local or on a bucket, or its bytes) as a DecodedPage."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else _read(path_or_bytes)
    gray, page_warnings, errors = gray_page(data, max_megapixels, keep_decoder_errors)
    return DecodedPage(resize(gray, image_size), page_warnings, errors)


def load_page(path_or_bytes, image_size):
    """The pixels alone of `decode_page` with the default limits."""
    return decode_page(path_or_bytes, image_size).pixels
