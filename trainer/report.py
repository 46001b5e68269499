"""Plots TensorBoard logs into PNGs and an index.html, for reading without TensorBoard.

    python -m trainer.report --log_dir=RUNS --output=report/

A run is a directory with a `train/` event directory (the Keras TensorBoard callback's, next to
`validation/`); every run under --log_dir is plotted. Writes `curves.png` (the epoch_* metrics,
loss and accuracy first: training and validation, one column per run) and, per run and
histogram family (`gradients/...`, `weights/...`), `<run>-<family>.png`: one panel per variable
with its histogram at every logged epoch, offset like TensorBoard's histogram view.
"""
import html
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorboard.backend.event_processing import event_accumulator

from tfrecords_tool import filesystems
from trainer import callbacks

# --log_dir is absl.logging's own flag (as in trainer.main): here, the TensorBoard log dir to read.
flags.DEFINE_string("output", "report", "Directory for the PNGs and index.html.")
flags.DEFINE_integer("max_columns", 4, "Histogram panels per row.", lower_bound=1)

FLAGS = flags.FLAGS
SPLITS = ("train", "validation")
FIRST_METRICS = ("epoch_loss", "epoch_accuracy")


class ReportError(Exception):
    """Nothing to report."""


def read_events(directory):
    """{tag: {step: value}} from the event files in `directory` (not its subdirectories), read
    with TensorBoard's EventAccumulator (every event kept).

    TF2 summaries are tensors: scalars become floats, histograms [k, 3] arrays of
    (left edge, right edge, count); anything else (text, images) is skipped.
    """
    accumulator = event_accumulator.EventAccumulator(
        directory, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    values = {}
    for tag in accumulator.Tags()["tensors"]:
        for event in accumulator.Tensors(tag):
            if event.tensor_proto.dtype == tf.string.as_datatype_enum:
                continue
            array = tf.make_ndarray(event.tensor_proto)
            if array.ndim == 0:
                values.setdefault(tag, {})[event.step] = float(array)
            elif array.ndim == 2 and array.shape[1] == 3:
                values.setdefault(tag, {})[event.step] = array.astype(np.float64)
    return values


def read_layer_stats(directory):
    """{statistic: {layer path: {step: value}}} of GradientHistograms' `layer_stats/...` scalars
    in `directory` (a run's logs/gradients); {} when there are none."""
    if not tf.io.gfile.isdir(directory):
        return {}
    stats = {}
    prefix = f"{callbacks.STATS_GROUP}/"
    for tag, series in read_events(directory).items():
        if tag.startswith(prefix):
            statistic, layer = tag[len(prefix):].split("/", 1)
            stats.setdefault(statistic, {})[layer] = series
    return stats


def find_runs(log_dir):
    """{run name: run directory} for every directory under `log_dir` holding a `train/`."""
    runs = {}
    for directory, subdirs, _ in tf.io.gfile.walk(log_dir):
        if "train" in [d.rstrip("/") for d in subdirs]:
            name = os.path.relpath(directory, log_dir)
            runs[os.path.basename(os.path.abspath(log_dir)) if name == "." else name] = directory
    return dict(sorted(runs.items()))


def read_run(directory):
    """(scalars {split: {tag: {step: v}}}, histograms {tag: {step: [k, 3]}}) of one run."""
    scalars, histograms = {}, {}
    for entry in sorted(tf.io.gfile.listdir(directory)):
        name = entry.rstrip("/")
        if not tf.io.gfile.isdir(f"{directory}/{name}"):
            continue
        for tag, series in read_events(f"{directory}/{name}").items():
            if np.ndim(next(iter(series.values()))) == 2:
                histograms[tag] = series
            elif name in SPLITS and tag.startswith("epoch_"):
                scalars.setdefault(name, {})[tag] = series
    return scalars, histograms


def plot_curves(runs):
    """One column per run, one row per epoch metric (training and validation)."""
    tags = {tag for scalars, _ in runs.values() for split in scalars.values() for tag in split}
    rows = [t for t in FIRST_METRICS if t in tags] + sorted(tags - set(FIRST_METRICS))
    fig, axes = plt.subplots(len(rows), len(runs), figsize=(4.5 * len(runs), 3.2 * len(rows)),
                             squeeze=False)
    for col, (name, (scalars, _)) in enumerate(runs.items()):
        for row, tag in enumerate(rows):
            ax = axes[row, col]
            for split, style in zip(SPLITS, ("o-", "s--")):
                series = scalars.get(split, {}).get(tag)
                if series:
                    steps = sorted(series)
                    ax.plot([s + 1 for s in steps], [series[s] for s in steps], style,
                            label=split, markersize=3)
            ax.set_title(f"{name}: {tag[len('epoch_'):]}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="gray")
    fig.tight_layout()
    return fig


def plot_histograms(histograms, title, max_columns):
    """One panel per variable: its histogram at each epoch, offset (earliest at the back)."""
    cols = min(max_columns, len(histograms))
    rows = -(-len(histograms) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows + 0.6), squeeze=False)
    for ax, (tag, series) in zip(axes.flat, sorted(histograms.items())):
        steps = sorted(series)
        peak = max(h[:, 2].max() for h in series.values()) or 1.0
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(steps)))
        for i, step in enumerate(steps):
            h = series[step]
            centers = (h[:, 0] + h[:, 1]) / 2
            base = len(steps) - 1 - i  # the latest epoch at the bottom, in front
            ax.fill_between(centers, base, base + 1.6 * h[:, 2] / peak, color=colors[i],
                            alpha=0.5, zorder=i, linewidth=0)
            ax.plot(centers, base + 1.6 * h[:, 2] / peak, color=colors[i], linewidth=0.8,
                    zorder=i)
        ax.set_yticks(range(len(steps)), [str(s + 1) for s in reversed(steps)], fontsize=7)
        ax.set_ylabel("epoch", fontsize=8)
        ax.set_title(tag.split("/", 1)[-1], fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    for ax in axes.flat[len(histograms):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _save(fig, output, filename):
    with tf.io.gfile.GFile(f"{output}/{filename}", "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return filename


def _slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def write_index(output, log_dir, curves, histogram_pngs):
    """index.html showing `curves` and then each run's histogram PNGs."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Training report</title>"
             "<style>body{font-family:sans-serif;margin:2em} img{max-width:100%}</style>"
             f"</head><body><h1>Training report</h1><p>Logs: {html.escape(log_dir)}</p>"
             f"<h2>Loss and accuracy</h2><img src='{curves}' alt='training curves'>"]
    for run, pngs in histogram_pngs.items():
        parts.append(f"<h2>{html.escape(run)}</h2>")
        if not pngs:
            parts.append("<p>No histograms logged.</p>")
        for family, png in pngs:
            parts.append(f"<h3>{html.escape(family)}</h3>"
                         f"<img src='{html.escape(png)}' alt='{html.escape(f'{run} {family}')}'>")
    parts.append("</body></html>\n")
    with tf.io.gfile.GFile(f"{output}/index.html", "w") as f:
        f.write("\n".join(parts))


def report(log_dir, output, max_columns):
    """Writes the PNGs and index.html; returns the paths written."""
    filesystems.register(log_dir)
    if not tf.io.gfile.isdir(log_dir):
        raise ReportError(f"log dir {log_dir} does not exist")
    runs = {name: read_run(directory) for name, directory in find_runs(log_dir).items()}
    runs = {name: run for name, run in runs.items() if run[0]}
    if not runs:
        raise ReportError(f"no TensorBoard runs under {log_dir}: expected directories with "
                          "train/ (and validation/) event files, as trainer.main writes in "
                          "{model_dir}/logs")
    tf.io.gfile.makedirs(output)
    written = [_save(plot_curves(runs), output, "curves.png")]
    histogram_pngs = {}
    for name, (_, histograms) in runs.items():
        families = {}
        for tag, series in histograms.items():
            families.setdefault(tag.split("/", 1)[0], {})[tag] = series
        histogram_pngs[name] = [
            (family, _save(plot_histograms(tags, f"{name}: {family}", max_columns), output,
                           f"{_slug(name)}-{_slug(family)}.png"))
            for family, tags in sorted(families.items())]
        written += [png for _, png in histogram_pngs[name]]
    write_index(output, log_dir, written[0], histogram_pngs)
    return [f"{output}/{name}" for name in written + ["index.html"]]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.log_dir:
        raise app.UsageError("--log_dir is required: the TensorBoard log dir to report on")
    try:
        written = report(FLAGS.log_dir, FLAGS.output, FLAGS.max_columns)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print("wrote " + "\n      ".join(written))


if __name__ == "__main__":
    filesystems.run(main)
