"""TIFF writing: every page variant of the sample, with Pillow or assembled by hand."""
import io
import os
import struct

import numpy as np
from PIL import Image

# Encodings the sample rotates through for normal pages (plus exactly one "multipage" file).
ENCODINGS = ("lzw", "packbits", "jpeg", "raw", "group4")
# Every TIFF variant `write_tiff` can produce (docs/data.md, "The pages").
ALL_ENCODINGS = ENCODINGS + ("multipage", "rgb", "16bit", "tiled", "bigendian")

GROUP4_THRESHOLD = 128   # pixels >= this become white in the bilevel (group4) encoding
JPEG_QUALITY = 90
TILE_SIZE = 256          # tile width and height of the "tiled" encoding (a multiple of 16)


def _pillow_strips(pixels, strip_size=None):
    """LZW-compress `pixels` with Pillow/libtiff; returns (rows_per_strip, [strip bytes])."""
    buf = io.BytesIO()
    kw = {} if strip_size is None else {"strip_size": strip_size}
    Image.fromarray(pixels, "L").save(buf, format="TIFF", compression="tiff_lzw", **kw)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        offsets = im.tag_v2[273]
        counts = im.tag_v2[279]
        rows = int(im.tag_v2.get(278, pixels.shape[0]))
    return rows, [data[o:o + c] for o, c in zip(offsets, counts)]


def _assemble_tiff(path, width, height, chunks, byteorder, layout):
    """Writes an 8-bit grayscale LZW TIFF from pre-compressed strips or tiles.

    Pillow can neither write tiles nor choose the byte order of an 8-bit image, so these two
    variants are assembled here: header, the chunks, then one IFD. `layout` is
    ("strips", rows_per_strip) or ("tiles", tile_width, tile_height).
    """
    e = ">" if byteorder == "big" else "<"
    body = bytearray()
    offsets = []
    for c in chunks:
        offsets.append(8 + len(body))
        body += c
        if len(body) % 2:
            body += b"\0"
    ifd_offset = 8 + len(body)
    SHORT, LONG = 3, 4
    tags = [(256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [8]),
            (259, SHORT, [5]), (262, SHORT, [1]), (277, SHORT, [1]), (284, SHORT, [1])]
    counts = [len(c) for c in chunks]
    if layout[0] == "strips":
        tags += [(273, LONG, offsets), (278, LONG, [layout[1]]), (279, LONG, counts)]
    else:
        tags += [(322, LONG, [layout[1]]), (323, LONG, [layout[2]]), (324, LONG, offsets),
                 (325, LONG, counts)]
    tags.sort()
    entries = bytearray(struct.pack(e + "H", len(tags)))
    extra = bytearray()
    extra_base = ifd_offset + 2 + 12 * len(tags) + 4
    for tag, typ, values in tags:
        fmt = "H" if typ == SHORT else "I"
        data = struct.pack(e + fmt * len(values), *values)
        if len(data) <= 4:
            field = data.ljust(4, b"\0")
        else:
            field = struct.pack(e + "I", extra_base + len(extra))
            extra += data
        entries += struct.pack(e + "HHI", tag, typ, len(values)) + field
    entries += b"\0\0\0\0"  # no next IFD
    header = (b"MM" if byteorder == "big" else b"II") + struct.pack(e + "HI", 42, ifd_offset)
    with open(path, "wb") as f:
        f.write(header + bytes(body) + bytes(entries) + bytes(extra))


def write_tiff(path, pixels, encoding, second_page=None):
    """Writes the uint8 HxW page `pixels` to `path` as a TIFF in `encoding` (ALL_ENCODINGS).

    lzw / packbits / jpeg / raw: 8-bit grayscale with that compression; group4: 1-bit bilevel
    CCITT Group 4 (pixels >= GROUP4_THRESHOLD are white); multipage: LZW, the page first, then
    `second_page` (default: the page turned upside down); rgb: 3x8-bit RGB, LZW, slightly
    tinted paper; 16bit: 16-bit grayscale (value * 257), LZW; tiled: 8-bit LZW in
    TILE_SIZE x TILE_SIZE tiles; bigendian: 8-bit LZW, big-endian ("MM") byte order.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be a uint8 HxW array, got {pixels.dtype} {pixels.shape}")
    pixels = np.ascontiguousarray(pixels)
    path = os.fspath(path)
    if encoding in ("lzw", "packbits", "jpeg", "raw"):
        kw = {"compression": {"lzw": "tiff_lzw"}.get(encoding, encoding)}
        if encoding == "jpeg":
            kw["quality"] = JPEG_QUALITY
        Image.fromarray(pixels, "L").save(path, format="TIFF", **kw)
    elif encoding == "group4":
        Image.fromarray(pixels >= GROUP4_THRESHOLD).save(path, format="TIFF", compression="group4")
    elif encoding == "multipage":
        second = pixels[::-1, ::-1] if second_page is None else np.asarray(second_page, np.uint8)
        Image.fromarray(pixels, "L").save(
            path, format="TIFF", compression="tiff_lzw", save_all=True,
            append_images=[Image.fromarray(np.ascontiguousarray(second), "L")])
    elif encoding == "rgb":
        tint = np.array([1.0, 0.985, 0.93], dtype=np.float32)
        rgb = (pixels[:, :, None].astype(np.float32) * tint + 0.5).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(path, format="TIFF", compression="tiff_lzw")
    elif encoding == "16bit":
        Image.fromarray(pixels.astype(np.uint16) * 257).save(path, format="TIFF",
                                                             compression="tiff_lzw")
    elif encoding == "tiled":
        h, w = pixels.shape
        t = TILE_SIZE
        padded = np.full(((h + t - 1) // t * t, (w + t - 1) // t * t), 255, np.uint8)
        padded[:h, :w] = pixels
        chunks = []
        for ty in range(0, padded.shape[0], t):
            for tx in range(0, padded.shape[1], t):
                tile = np.ascontiguousarray(padded[ty:ty + t, tx:tx + t])
                rows, strips = _pillow_strips(tile, strip_size=t * t)
                assert len(strips) == 1 and rows == t
                chunks.append(strips[0])
        _assemble_tiff(path, w, h, chunks, "little", ("tiles", t, t))
    elif encoding == "bigendian":
        h, w = pixels.shape
        rows, strips = _pillow_strips(pixels)
        _assemble_tiff(path, w, h, strips, "big", ("strips", rows))
    else:
        raise ValueError(f"unknown TIFF encoding {encoding!r}; expected one of {ALL_ENCODINGS}")
