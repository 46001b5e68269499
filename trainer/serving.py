"""A trained model as a SavedModel that stock TensorFlow Serving loads (`trainer.export`'s library).

    from trainer.serving import export
    export_dir = export(model_dir="runs/model3", checkpoint="best")

Two signatures, both -> `probabilities` (float32 [N, C]), `class_id` (int32 [N]), `class_name`
(string [N]); decoding and resizing happen in the graph, so clients need nothing from this
repository:
- `serving_default`: `image_bytes` (tf.string [N]): PNG, JPEG, BMP or GIF files, decoded by
  core TensorFlow (`tf.io.decode_image`). TIFF bytes fail the request with a message saying
  how to send them (TIFF_MESSAGE).
- `pixels`: `pixels` (uint8): one page of any size as [H, W] or [H, W, C] (C = 1, or 3 for RGB),
  or a batch of equally sized pages [N, H, W, C]: for clients that decode TIFF themselves.

The default graph holds core TensorFlow ops only (tests/test_predict_export.py loads it in a
process that imports nothing but TensorFlow). `--tiff_in_graph` also decodes TIFF in
`serving_default` with tensorflow-io's `IO>DecodeTiff` (libtiff: 8-bit, CCITT G3/G4, RGB,
16-bit, tiled, the first page of multi-page files); such a SavedModel needs a server with
tensorflow-io's op library (a custom build of TF Serving; in Python
`tf.load_op_library(<site-packages>/tensorflow_io/python/ops/libtensorflow_io.so)` before
`tf.saved_model.load`, `import tensorflow_io` alone does not register it).

Pages end up exactly as `tfrecords_tool.decode.load_page` makes them for training, bit for bit:
Pillow's `convert("L")` (ITU-R 601-2 luma in integer arithmetic), then its BILINEAR resize with
`reducing_gap` (an `Image.reduce` box average, then a horizontal and a vertical bilinear pass),
each step in Pillow's own fixed-point arithmetic (weights with 22 fractional bits, sums exact in
float64). With --tiff_in_graph, differences remain only in what libtiff and Pillow decode
differently: libtiff reduces 16-bit samples to their high byte (load_page rounds v * 255 /
65535: at most 1 grey level apart), and a file whose compressed data is cut short after an
intact directory, which load_page refuses, decodes here with its missing part blank or garbled.
"""
import dataclasses
from typing import Optional

import tensorflow as tf

from tfrecords_tool import filesystems
from tfrecords_tool.cli import setting
from tfrecords_tool.decode import REDUCING_GAP, TIFF_SIGNATURES
from trainer import artifacts


@dataclasses.dataclass
class ExportConfig(artifacts.ModelChoice):
    export_dir: Optional[str] = setting(
        None, "SavedModel directory; default {model_dir}/export/1 (TF Serving wants a version "
        "number as the last path component).")
    tiff_in_graph: bool = setting(
        False, "Also decode TIFF bytes in `serving_default`, with tensorflow-io's DecodeTiff op: "
        "the SavedModel then needs a server with tensorflow-io's op library loaded (stock TF "
        "Serving cannot load it).")

    @property
    def target_dir(self):
        return self.export_dir or f"{self.model_dir}/export/1"


def _is_tiff(encoded):
    header = tf.strings.substr(encoded, 0, 4)
    return tf.reduce_any(tf.equal(header, tf.constant(TIFF_SIGNATURES)))


def _luma(pixels):
    """uint8 [H, W, C] -> [H, W, 1] like Pillow's convert("L"): (R*19595+G*38470+B*7471) >> 16."""
    rgb = tf.cast(pixels[..., :3], tf.int32)
    weights = tf.constant([19595, 38470, 7471], tf.int32)
    luma = tf.bitwise.right_shift(tf.reduce_sum(rgb * weights, axis=-1, keepdims=True) + 32768, 16)
    return tf.cast(luma, tf.uint8)


def _to_gray(pixels):
    """uint8 [H, W, 1..4] -> [H, W, 1]; colour channels (RGB[A]) go through `_luma`."""
    return tf.cond(tf.shape(pixels)[-1] >= 3, lambda: _luma(pixels), lambda: pixels[..., :1])


_PRECISION_BITS = 22  # Pillow's Resample.c: fixed-point weights of 8-bit images


def _reduce(pixels, factor_y, factor_x):
    """int64 [H, W] -> Pillow's `Image.reduce((factor_x, factor_y))`: means of the blocks (partial
    at the right and bottom edges), rounded with Pillow's float32 reciprocal multiplier."""
    height, width = tf.shape(pixels)[0], tf.shape(pixels)[1]
    rows, columns = -(-height // factor_y), -(-width // factor_x)
    padding = [[0, rows * factor_y - height], [0, columns * factor_x - width]]

    def block_sums(values):
        padded = tf.pad(values, padding)
        return tf.reduce_sum(tf.reshape(padded, [rows, factor_y, columns, factor_x]), axis=[1, 3])

    sums, counts = block_sums(pixels), block_sums(tf.ones_like(pixels))
    multiplier = tf.cast(tf.constant(2.0**32, tf.float32) / tf.cast(256 * counts, tf.float32),
                         tf.int64)
    return tf.bitwise.right_shift((sums + counts // 2) * multiplier, 24)


def _bilinear_weights(in_size, in_end, out_size):
    """Pillow's fixed-point BILINEAR weights [out, in] that map input [0, in_end) to `out_size`."""
    scale = in_end / tf.cast(out_size, tf.float64)
    support = tf.maximum(scale, 1.0)  # the triangle widens when reducing: antialiasing
    centers = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    first = tf.maximum(tf.floor(centers - support + 0.5), 0.0)[:, tf.newaxis]
    end = tf.minimum(tf.floor(centers + support + 0.5), tf.cast(in_size, tf.float64))[:, tf.newaxis]
    index = tf.range(in_size, dtype=tf.float64)[tf.newaxis]
    triangle = tf.maximum(1.0 - tf.abs((index - centers[:, tf.newaxis] + 0.5) * (1.0 / support)), 0.0)
    weights = tf.where((index >= first) & (index < end), triangle, 0.0)
    weights = tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=1, keepdims=True))
    return tf.floor(0.5 + weights * 2.0**_PRECISION_BITS)


def _resample_rows(pixels, weights):
    """float64 [R, in] x weights [out, in] -> [R, out] uint8 values, rounded as Pillow does."""
    sums = tf.linalg.matmul(pixels, weights, transpose_b=True) + 2.0**(_PRECISION_BITS - 1)
    return tf.clip_by_value(tf.floor(sums / 2.0**_PRECISION_BITS), 0.0, 255.0)


def _resize_like_pillow(gray, image_size):
    """uint8 [H, W, 1] -> [S, S, 1] like `resize((S, S), BILINEAR, reducing_gap=REDUCING_GAP)`."""
    pixels = tf.cast(gray[..., 0], tf.int64)
    height = tf.cast(tf.shape(pixels)[0], tf.float64)
    width = tf.cast(tf.shape(pixels)[1], tf.float64)
    factor_x = tf.maximum(tf.cast(width / image_size / REDUCING_GAP, tf.int32), 1)
    factor_y = tf.maximum(tf.cast(height / image_size / REDUCING_GAP, tf.int32), 1)
    reduced = tf.cast(_reduce(pixels, factor_y, factor_x), tf.float64)

    def box_end(size, factor):  # the part of the reduced image to resample; Pillow passes a float32
        return tf.cast(tf.cast(size / tf.cast(factor, tf.float64), tf.float32), tf.float64)

    rows = _resample_rows(reduced, _bilinear_weights(tf.shape(reduced)[1],
                                                     box_end(width, factor_x), image_size))
    columns = _resample_rows(tf.transpose(rows), _bilinear_weights(tf.shape(rows)[0],
                                                                   box_end(height, factor_y),
                                                                   image_size))
    return tf.cast(tf.transpose(columns), tf.uint8)[..., tf.newaxis]


TIFF_MESSAGE = ("TIFF pages need tensorflow-io's decode_tiff, which stock TensorFlow does not "
                "have: decode them on the client and send their pixels to the `pixels` signature, "
                "or export with --tiff_in_graph for a server with tensorflow-io's op library")


def _decode_core(encoded):
    """PNG, JPEG, BMP or GIF bytes -> uint8 [H, W, C] with core TensorFlow ops only."""
    refuse_tiff = tf.debugging.Assert(tf.logical_not(_is_tiff(encoded)), [TIFF_MESSAGE])
    with tf.control_dependencies([refuse_tiff]):
        return tf.io.decode_image(encoded, channels=0, expand_animations=False)


def _decode_with_tiff(encoded):
    """As `_decode_core`, and TIFF through tensorflow-io (an op stock TF Serving cannot load)."""
    import tensorflow_io as tfio  # pylint: disable=import-outside-toplevel

    return tf.cond(
        _is_tiff(encoded),
        lambda: tfio.experimental.image.decode_tiff(encoded),  # RGBA [H, W, 4]
        lambda: tf.io.decode_image(encoded, channels=0, expand_animations=False))


def resize_page(pixels, image_size):
    """uint8 [H, W, C] (C = 1, 3 or 4) -> [S, S, 1] as the converter makes it."""
    return _resize_like_pillow(_to_gray(pixels), image_size)


def decode_page(encoded, image_size, tiff=False):
    """One encoded page (scalar tf.string) -> uint8 [S, S, 1], in the graph."""
    pixels = _decode_with_tiff(encoded) if tiff else _decode_core(encoded)
    return resize_page(pixels, image_size)


def _page_batch(pixels):
    """uint8 [H, W] or [H, W, C] (one page) or [B, H, W, C] -> [B, H, W, C]."""
    rank = tf.rank(pixels)
    check = tf.debugging.Assert((rank >= 2) & (rank <= 4), [
        "pixels must be [height, width], [height, width, channels] or [batch, height, width, "
        "channels]; got shape", tf.shape(pixels)])
    with tf.control_dependencies([check]):
        shape = tf.concat([tf.ones([tf.cast(rank < 4, tf.int32)], tf.int32), tf.shape(pixels),
                           tf.ones([tf.cast(rank == 2, tf.int32)], tf.int32)], axis=0)
    batch = tf.reshape(pixels, shape)
    batch.set_shape([None, None, None, None])
    return batch


class ServingModule(tf.Module):
    """Holds the Keras model and the class names; `serve` and `serve_pixels` are the signatures."""

    def __init__(self, model, class_names, tiff=False):
        super().__init__()
        self.model = model
        self.class_names = tf.constant(class_names)
        self.image_size = model.input_shape[1]
        self.tiff = tiff

    def _classify(self, images):
        # An empty request gets empty answers (VGG16's convolutions fail on an empty batch).
        probabilities = tf.cond(
            tf.shape(images)[0] > 0,
            lambda: tf.cast(self.model(images, training=False), tf.float32),
            lambda: tf.zeros([0, self.model.output_shape[-1]], tf.float32))
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": tf.gather(self.class_names, class_id)}

    def _map_pages(self, function, elements):
        size = self.image_size
        return tf.map_fn(function, elements,
                         fn_output_signature=tf.TensorSpec([size, size, 1], tf.uint8))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        return self._classify(self._map_pages(
            lambda s: decode_page(s, self.image_size, self.tiff), image_bytes))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="pixels")])
    def serve_pixels(self, pixels):
        return self._classify(self._map_pages(
            lambda page: resize_page(page, self.image_size), _page_batch(pixels)))


def export(config=None, **settings):
    """Writes the SavedModel of `config` (or `ExportConfig(**settings)`) to a new directory;
    returns its path."""
    config = config or ExportConfig(**settings)
    export_dir = config.target_dir
    filesystems.register(export_dir)
    if tf.io.gfile.exists(export_dir):
        raise artifacts.ArtifactError(
            f"{export_dir} exists: TF Serving may be serving it; export to a new version number")
    model = artifacts.load_model(config.model_dir, config.checkpoint)
    module = ServingModule(model, artifacts.class_names(config.model_dir, model.output_shape[-1]),
                           config.tiff_in_graph)
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve,
                                                        "pixels": module.serve_pixels})
    return export_dir
