"""Classifies scanned TIFF pages with a trained model (`trainer.predict`'s library).

    from trainer.prediction import predict
    for page in predict(model_dir="runs/model3", pages=["page1.tif"], top_k=3):
        print(page.path, page.top or page.error)

Pages go through `tfrecords_tool.decode.decode_page`, the converter's decoder, at the model's
input size (a decoder warning is logged with the page's path). A page that cannot be read gets
its error message; the other pages are still classified.
"""
import dataclasses
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
from absl import logging

from tfrecords_tool import errors
from tfrecords_tool import filesystems
from tfrecords_tool.cli import setting
from tfrecords_tool.decode import PageError, decode_page
from trainer import artifacts


@dataclasses.dataclass
class PredictConfig(artifacts.ModelChoice):
    pages: List[str] = setting((), "TIFF files to classify (the command's arguments).")
    top_k: int = setting(3, "Classes to show per page.", lower_bound=1)
    batch_size: int = setting(32, "Pages per model call.", lower_bound=1)


class PagePrediction(NamedTuple):
    path: str
    top: Optional[List[Tuple[int, str, float]]]   # (class_id, class_name, probability), best first
    error: Optional[str]                          # why the page could not be read


def predict(config=None, **settings):
    """[PagePrediction] for `config.pages` (or `PredictConfig(**settings)`), in their order."""
    config = config or PredictConfig(**settings)
    if not config.pages:
        raise errors.UsageError("give one or more TIFF files to classify")
    filesystems.register(*config.pages)
    model = artifacts.load_model(config.model_dir, config.checkpoint)
    class_names = artifacts.class_names(config.model_dir, model.output_shape[-1])
    return [PagePrediction(path, None if error else top_classes(probs, class_names, config.top_k),
                           error)
            for path, probs, error in classify(model, list(config.pages), config.batch_size)]


def classify(model, paths, batch_size):
    """Yields (path, probabilities [C] or None, error message or None), in the order of `paths`."""
    image_size = model.input_shape[1]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        pages, messages = [], []
        for path in chunk:
            try:
                page = decode_page(path, image_size)
                for warning in page.warnings:
                    logging.warning("%s: decoder warning: %s", path, warning)
                pages.append(page.pixels)
                messages.append(None)
            except PageError as e:
                messages.append(str(e))
        probs = iter(model.predict(np.stack(pages)[..., None], verbose=0) if pages else [])
        for path, error in zip(chunk, messages):
            yield path, None if error else next(probs), error


def top_classes(probs, class_names, k):
    """[(class_id, class_name, probability)] for the k most probable classes."""
    ids = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), class_names[i], float(probs[i])) for i in ids]
