"""Classifies scanned TIFF pages with a trained model.

    python -m trainer.predict --model_dir=RUN page1.tif page2.tif [--top_k=3] [--json]

Prints one line per page (`page1.tif: letter 0.912, memo 0.051, form 0.013`) or one JSON
document; a page that cannot be read gets an error line on stderr and the exit status is 1, the
other pages are still classified (trainer.prediction).
"""
import json
import sys

from absl import flags

from tfrecords_tool import cli
from tfrecords_tool import errors
from trainer import prediction

FLAGS = flags.FLAGS


def main(argv):
    config = cli.from_flags(prediction.PredictConfig, pages=argv[1:] or FLAGS.pages)
    results = prediction.predict(config)
    for page in results:
        if page.error:
            print(f"error: {page.path}: {page.error}", file=sys.stderr)
        elif not FLAGS.json:
            print(f"{page.path}: " + ", ".join(f"{name} {p:.3f}" for _, name, p in page.top))
    if FLAGS.json:
        print(json.dumps({"model": config.model_path, "predictions": [
            {"file": page.path, "error": page.error} if page.error else
            {"file": page.path, "top": [{"class_id": i, "class_name": name, "probability": p}
                                        for i, name, p in page.top]}
            for page in results]}, indent=1))
    failed = sum(1 for page in results if page.error)
    if failed:
        raise errors.SomeInputsFailed(f"{failed} of {len(results)} pages could not be read")


if __name__ == "__main__":
    cli.define_flags(prediction.PredictConfig)
    flags.DEFINE_bool("json", False, "Print one JSON document instead of one line per page.")
    cli.run(main)
