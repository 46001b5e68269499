"""Exports a trained model as a SavedModel for TF Serving that takes encoded pages.

    python -m trainer.export --model_dir=RUN [--export_dir=RUN/export/1]

Signature `serving_default`: `image_bytes` (tf.string [None]: TIFF, or PNG/JPEG/GIF/BMP files)
-> `probabilities` (float32 [None, C]), `class_id` (int32 [None]), `class_name` (string [None]).
Decoding and resizing happen in the graph, so clients need nothing from this repository.

TIFF is decoded by tensorflow-io's `decode_tiff` (libtiff): 8-bit grayscale (uncompressed, LZW,
PackBits, Deflate, JPEG-in-TIFF), 1-bit CCITT Group 3/4, RGB, 16-bit, tiled, big-endian, and the
first page of multi-page files. A file libtiff cannot read (damaged directory, unknown
compression) fails the request with InvalidArgumentError "unable to open TIFF from memory";
bytes that are no image at all with "Unknown image file format". The graph holds
tensorflow-io's `IO>DecodeTiff` op: TF Serving needs tensorflow-io's op library loaded (a
custom-op build of the model server), and Python must load it before `tf.saved_model.load`
(`import tensorflow_io` alone does not): `tf.load_op_library(<site-packages>/tensorflow_io/
python/ops/libtensorflow_io.so)`.

Pages end up exactly as `tfrecords_tool.decode.load_page` makes them for training, bit for bit:
Pillow's `convert("L")` (ITU-R 601-2 luma in integer arithmetic), then its BILINEAR resize with
`reducing_gap` (an `Image.reduce` box average, then a horizontal and a vertical bilinear pass),
each step in Pillow's own fixed-point arithmetic (weights with 22 fractional bits, sums exact in
float64). Differences remain only in what libtiff and Pillow decode differently: libtiff reduces
16-bit samples to their high byte (load_page rounds v * 255 / 65535: at most 1 grey level
apart), and a file whose compressed data is cut short after an intact directory, which
load_page refuses, decodes here with its missing part blank or garbled.
"""
import sys

import tensorflow as tf
import tensorflow_io as tfio
from absl import app, flags

from tfrecords_tool import filesystems
from tfrecords_tool.decode import REDUCING_GAP, TIFF_SIGNATURES
from trainer import artifacts

flags.DEFINE_string("model_dir", None, "Training run directory (holds final.keras / best.keras).")
flags.DEFINE_enum("checkpoint", "final", artifacts.CHECKPOINTS, "Which saved model to export.")
flags.DEFINE_string("export_dir", None, "SavedModel directory; default {model_dir}/export/1 "
                    "(TF Serving wants a version number as the last path component).")

FLAGS = flags.FLAGS


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


def decode_page(encoded, image_size):
    """One encoded page (scalar tf.string) -> uint8 [S, S, 1], in the graph."""
    pixels = tf.cond(
        _is_tiff(encoded),
        lambda: tfio.experimental.image.decode_tiff(encoded),  # RGBA [H, W, 4]
        lambda: tf.io.decode_image(encoded, channels=0, expand_animations=False))
    return _resize_like_pillow(_to_gray(pixels), image_size)


class ServingModule(tf.Module):
    """Holds the Keras model and the class names; `serve` is the serving signature."""

    def __init__(self, model, class_names):
        super().__init__()
        self.model = model
        self.class_names = tf.constant(class_names)
        self.image_size = model.input_shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        size = self.image_size
        images = tf.map_fn(lambda s: decode_page(s, size), image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 1], tf.uint8))
        # An empty request gets empty answers (VGG16's convolutions fail on an empty batch).
        probabilities = tf.cond(
            tf.size(image_bytes) > 0,
            lambda: tf.cast(self.model(images, training=False), tf.float32),
            lambda: tf.zeros([0, self.model.output_shape[-1]], tf.float32))
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": tf.gather(self.class_names, class_id)}


def export(model_dir, checkpoint, export_dir):
    """Writes the SavedModel of `{model_dir}/{checkpoint}.keras` to the new `export_dir`."""
    if tf.io.gfile.exists(export_dir):
        raise artifacts.ArtifactError(
            f"{export_dir} exists: TF Serving may be serving it; export to a new version number")
    model = artifacts.load_model(model_dir, checkpoint)
    module = ServingModule(model, artifacts.class_names(model_dir, model.output_shape[-1]))
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    export_dir = FLAGS.export_dir or f"{FLAGS.model_dir}/export/1"
    filesystems.register(export_dir)
    try:
        export(FLAGS.model_dir, FLAGS.checkpoint, export_dir)
    except artifacts.ArtifactError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"exported {FLAGS.model_dir}/{FLAGS.checkpoint}.keras to {export_dir}\n"
          f"  serving_default: image_bytes (TIFF/PNG file bytes) -> probabilities, class_id, "
          f"class_name")


if __name__ == "__main__":
    flags.mark_flag_as_required("model_dir")
    filesystems.run(main)
