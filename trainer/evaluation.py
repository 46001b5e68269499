"""Evaluates a trained model on a whole split of converted TFRecords (`trainer.evaluate`'s library).

    from trainer.evaluation import evaluate
    metrics = evaluate(model_dir="runs/model3", data_dir="data", split="test", checkpoint="best")

Writes `{model_dir}/eval-{split}/metrics.json` (accuracy, top-3 accuracy, loss, per-class
precision/recall/F1, confusion matrix with rows = true class) and `confusion_matrix.png`, and
logs the same to TensorBoard in `{model_dir}/logs/eval-{split}`. Runs under the training
strategies (strategy, cpu_replicas); only the chief writes.
"""
import dataclasses
import io
import json
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfrecords_tool import errors
from tfrecords_tool.cli import setting
from trainer import artifacts, data, distribute

TOP_K = 3


@dataclasses.dataclass
class EvaluateConfig(artifacts.ModelChoice, distribute.DistributionConfig):
    data_dir: Optional[str] = setting(
        None, "Directory (or gs:// / s3:// URL) with the converter's shards.")
    split: str = setting("test", "Split to evaluate.")
    batch_size: int = setting(64, "Global batch size.", lower_bound=1)


def predict_split(strategy, model, dataset):
    """(probabilities [N, C], labels [N]) for every record of `dataset`, in record order."""

    @tf.function
    def step(images, labels):
        probs = strategy.run(lambda x: model(x, training=False), args=(images,))
        return strategy.gather(probs, axis=0), strategy.gather(labels, axis=0)

    probs, labels = [], []
    for images, batch_labels in strategy.experimental_distribute_dataset(dataset):
        p, y = step(images, batch_labels)
        probs.append(p.numpy())
        labels.append(y.numpy())
    return np.concatenate(probs), np.concatenate(labels)


def compute_metrics(probs, labels, class_names):
    """The metrics.json dictionary."""
    num_classes = len(class_names)
    predicted = probs.argmax(axis=1)
    confusion = tf.math.confusion_matrix(labels, predicted, num_classes).numpy()
    true_positives = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # no pages of / predicted as a class: 0
        precision = np.nan_to_num(true_positives / confusion.sum(axis=0))
        recall = np.nan_to_num(true_positives / support)
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    k = min(TOP_K, num_classes)
    return {
        "num_records": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        f"top_{TOP_K}_accuracy": float(np.mean(
            keras.metrics.sparse_top_k_categorical_accuracy(labels, probs, k=k))),
        "loss": float(np.mean(keras.losses.sparse_categorical_crossentropy(labels, probs))),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": [
            {"class_id": i, "class_name": name, "precision": float(precision[i]),
             "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)],
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
    }


def plot_confusion_matrix(confusion, class_names, title):
    """PNG bytes: counts in the cells, colour = share of the true class (row)."""
    confusion = np.asarray(confusion)
    n = len(class_names)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    size = max(6.0, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_results(metrics, png, out_dir, log_dir, step):
    """metrics.json and confusion_matrix.png in `out_dir`; scalars and the image in `log_dir` at
    `step` (the training curves' epoch index of the evaluated model)."""
    tf.io.gfile.makedirs(out_dir)
    with tf.io.gfile.GFile(f"{out_dir}/metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    with tf.io.gfile.GFile(f"{out_dir}/confusion_matrix.png", "wb") as f:
        f.write(png)
    with tf.summary.create_file_writer(log_dir).as_default(step=step):
        for key in ("accuracy", f"top_{TOP_K}_accuracy", "loss", "macro_precision",
                    "macro_recall", "macro_f1"):
            tf.summary.scalar(f"eval/{key}", metrics[key])
        for row in metrics["per_class"]:
            for key in ("precision", "recall", "f1"):
                tf.summary.scalar(f"{key}/{row['class_name']}", row[key])
        tf.summary.image("confusion_matrix", tf.io.decode_png(png)[None])


def evaluate(config=None, strategy=None, **settings):
    """Evaluates `config` (or `EvaluateConfig(**settings)`); returns the metrics.json dictionary.

    Writes {model_dir}/eval-{split}/ (metrics.json, confusion_matrix.png) and its TensorBoard
    scalars on the chief only; every worker returns the metrics.
    """
    config = config or EvaluateConfig(**settings)
    if not config.data_dir:
        raise errors.UsageError("--data_dir is required")
    strategy = strategy or distribute.make_strategy(config.strategy, config.cpu_replicas)
    manifest = data.read_manifest(config.data_dir, config.split)
    files = data.shard_files(config.data_dir, config.split)
    with strategy.scope():
        model = artifacts.load_model(config.model_dir, config.checkpoint)
    image_size = manifest["image_size"]
    class_names = manifest["class_names"]
    if model.input_shape[1] != image_size or model.output_shape[-1] != len(class_names):
        raise artifacts.ArtifactError(
            f"the model takes {model.input_shape[1]}px pages into {model.output_shape[-1]} classes;"
            f" the '{config.split}' records are {image_size}px with {len(class_names)} classes")
    dataset = data.image_dataset(files, image_size, manifest["image_format"], config.batch_size,
                                 training=False, num_workers=distribute.num_workers(strategy))
    probs, labels = predict_split(strategy, model, dataset)
    metrics = {"model": config.model_path, "split": config.split,
               **compute_metrics(probs, labels, class_names)}
    if distribute.is_chief(strategy):
        title = (f"{config.split}: {metrics['num_records']} pages, "
                 f"accuracy {metrics['accuracy']:.1%} ({config.checkpoint}.keras)")
        png = plot_confusion_matrix(metrics["confusion_matrix"], class_names, title)
        epochs = artifacts.trained_epochs(config.model_dir, config.checkpoint)
        write_results(metrics, png, output_dir(config),
                      f"{config.model_dir}/logs/eval-{config.split}",
                      step=epochs - 1 if epochs else 0)
    return metrics


def output_dir(config):
    return f"{config.model_dir}/eval-{config.split}"


def describe(metrics):
    """The metrics as lines of text (what `python -m trainer.evaluate` prints)."""
    lines = [f"{metrics['split']}: {metrics['num_records']} records  accuracy "
             f"{metrics['accuracy']:.4f}  top-{TOP_K} {metrics[f'top_{TOP_K}_accuracy']:.4f}  "
             f"loss {metrics['loss']:.4f}  macro F1 {metrics['macro_f1']:.4f}"]
    for row in metrics["per_class"]:
        lines.append(f"  {row['class_name']:24s} precision {row['precision']:.3f}  recall "
                     f"{row['recall']:.3f}  F1 {row['f1']:.3f}  ({row['support']} pages)")
    return "\n".join(lines)
