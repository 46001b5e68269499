"""Classifies scanned TIFF pages with a trained model.

    python -m trainer.predict --model_dir=RUN page1.tif page2.tif [--top_k=3] [--json]

Pages go through `tfrecords_tool.decode.decode_page`, the converter's decoder, at the model's
input size (a decoder warning is printed with the page's path). Prints one line per page (`page1.tif: letter 0.912, memo 0.051, form 0.013`) or one
JSON document; a page that cannot be read gets an error line (on stderr) and the exit status
is 1, the other pages are still classified.
"""
import sys

import json

import numpy as np
from absl import app, flags, logging

from tfrecords_tool import filesystems
from tfrecords_tool.decode import PageError, decode_page
from trainer import artifacts

flags.DEFINE_string("model_dir", None, "Training run directory (holds final.keras / best.keras).")
flags.DEFINE_enum("checkpoint", "final", artifacts.CHECKPOINTS, "Which saved model to use.")
flags.DEFINE_integer("top_k", 3, "Classes to show per page.", lower_bound=1)
flags.DEFINE_bool("json", False, "Print one JSON document instead of one line per page.")
flags.DEFINE_integer("batch_size", 32, "Pages per model call.", lower_bound=1)

FLAGS = flags.FLAGS


def classify(model, paths, batch_size):
    """Yields (path, probabilities [C] or None, error message or None), in the order of `paths`."""
    image_size = model.input_shape[1]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        pages, errors = [], []
        for path in chunk:
            try:
                page = decode_page(path, image_size)
                for warning in page.warnings:
                    logging.warning("%s: decoder warning: %s", path, warning)
                pages.append(page.pixels)
                errors.append(None)
            except PageError as e:
                errors.append(str(e))
        probs = iter(model.predict(np.stack(pages)[..., None], verbose=0) if pages else [])
        for path, error in zip(chunk, errors):
            yield path, None if error else next(probs), error


def top_classes(probs, class_names, k):
    """[(class_id, class_name, probability)] for the k most probable classes."""
    ids = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), class_names[i], float(probs[i])) for i in ids]


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more TIFF files to classify")
    filesystems.register(*paths)
    try:
        model = artifacts.load_model(FLAGS.model_dir, FLAGS.checkpoint)
        class_names = artifacts.class_names(FLAGS.model_dir, model.output_shape[-1])
    except artifacts.ArtifactError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    results, failed = [], 0
    for path, probs, error in classify(model, paths, FLAGS.batch_size):
        if error:
            failed += 1
            print(f"error: {path}: {error}", file=sys.stderr)
            results.append({"file": path, "error": error})
            continue
        top = top_classes(probs, class_names, FLAGS.top_k)
        results.append({"file": path, "top": [
            {"class_id": i, "class_name": name, "probability": p} for i, name, p in top]})
        if not FLAGS.json:
            print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for _, name, p in top))
    if FLAGS.json:
        print(json.dumps({"model": f"{FLAGS.model_dir}/{FLAGS.checkpoint}.keras",
                          "predictions": results}, indent=1))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    flags.mark_flag_as_required("model_dir")
    filesystems.run(main)
