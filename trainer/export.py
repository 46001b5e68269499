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

Pages end up as `tfrecords_tool.decode.load_page` makes them for training: Pillow's
`convert("L")` (ITU-R 601-2 luma in integer arithmetic, done here the same way), then Pillow's
BILINEAR resize to S x S, done here as Pillow does it: a horizontal, then a vertical
antialiased triangle-filter pass (`tf.image.resize(antialias=True)`), each rounded to uint8.
Pillow computes in fixed point, TF in float: at 224 x 224, under 0.05% of the pixels differ,
by 1 grey level (almost none at 32 x 32; more when upscaling). Other differences:
libtiff reduces 16-bit samples to their high byte (load_page rounds v * 255 / 65535: at most 1
grey level apart), and a file whose compressed data is cut short after an intact directory,
which load_page refuses, decodes here with its missing part blank or garbled.
"""
import sys

import tensorflow as tf
import tensorflow_io as tfio
from absl import app, flags

from tfrecords_tool.decode import TIFF_SIGNATURES
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


def _resize_like_pillow(gray, image_size):
    """uint8 [H, W, 1] -> [S, S, 1] like Pillow's resize(BILINEAR): width pass, then height."""
    def rounded(x):
        return tf.clip_by_value(tf.floor(x + 0.5), 0.0, 255.0)

    x = tf.cast(gray, tf.float32)
    x = rounded(tf.image.resize(x, [tf.shape(x)[0], image_size], "bilinear", antialias=True))
    x = rounded(tf.image.resize(x, [image_size, image_size], "bilinear", antialias=True))
    return tf.cast(x, tf.uint8)


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
        probabilities = self.model(images, training=False)
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
    app.run(main)
