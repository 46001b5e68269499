"""Compares training runs on one page: index.html (relative PNGs) and report.json.

`report(ReportConfig(runs="runs/", output="report/"))` (or `report(runs=..., output=...)`);
`python -m trainer.report` is its command line. `runs`: a directory of model dirs
(trainer.main's --model_dir), one model dir, or a comma-separated list of them. Per run it reads
history.json, best.json, run.json, the evaluations (eval-<split>/metrics.json) and the
TensorBoard events under logs/. The page has the comparison table, curves overlaid across runs
(loss, accuracy, learning rates), then per run its diagnosis (trainer.diagnose), per-layer
gradient-norm / update-ratio / dead-unit curves, the confusion matrix and per-class F1 of each
evaluation, and the gradient histograms (GradientHistograms, logs/gradients) and weight
histograms (the Keras TensorBoard callback's `histogram_freq`, logs/train). report.json holds
the table and every run's diagnosis as codes with their evidence.
"""
import dataclasses
import html
import json
import logging
import math
import os
import re
import typing

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from tfrecords_tool import cli, errors, filesystems
from trainer import artifacts, callbacks, diagnose, models

logging.getLogger("tensorboard").setLevel(logging.WARNING)  # EventAccumulator's per-file INFO lines
IGNORED_FLAGS = ("model_dir", "tensorboard_dir", "log_dir")  # differ between any two runs (log_dir: older runs)



@dataclasses.dataclass
class ReportConfig:
    """What `report` compares and where it writes (the flags of `python -m trainer.report`)."""
    runs: typing.Optional[str] = cli.setting(
        None, "Directory of model dirs, a model dir, or a comma-separated list of model dirs.")
    output: str = cli.setting("report", "Directory for index.html, report.json and the PNGs.")
    max_columns: int = cli.setting(4, "Histogram panels per row.", lower_bound=1)


@dataclasses.dataclass
class Report:
    """What `report` wrote: every file's path (PNGs, index.html, report.json, in that order)
    and the contents of report.json (before NaN/inf became null)."""
    paths: typing.List[str]
    record: dict


class ReportError(errors.ToolError):
    """Nothing to report (no runs, a missing directory); exit status 2."""


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


def read_layer_stats(directory, events=None):
    """{statistic: {layer path: {step: value}}} of GradientHistograms' `layer_stats/...` scalars
    in `directory` (a run's logs/gradients; or its already read `events`); {} when none."""
    if events is None:
        events = read_events(directory) if tf.io.gfile.isdir(directory) else {}
    stats = {}
    prefix = f"{callbacks.STATS_GROUP}/"
    for tag, series in events.items():
        if tag.startswith(prefix):
            statistic, layer = tag[len(prefix):].split("/", 1)
            stats.setdefault(statistic, {})[layer] = series
    return stats


KERAS_WEIGHT_HISTOGRAM = re.compile(r"^(?P<variable>.+)_\d+/histogram$")


def weight_histograms(events, trainable_layers=None):
    """{"weights/<layer>/<variable>": {step: [k, 3] array}} from the weight histograms the Keras
    TensorBoard callback writes with `histogram_freq` (tag `<variable name, ':' as '_'>/histogram`,
    e.g. `block5_conv1/kernel_0/histogram`, in logs/train; `events` = read_events of that dir).
    Keras logs every weight, frozen and non-trainable ones included; with `trainable_layers`
    (run.json's layer paths, nested ones as 'vgg16/block5_conv1') only those layers' are kept,
    the variables GradientHistograms has gradients of."""
    keep = None if not trainable_layers else {path.rsplit("/", 1)[-1] for path in trainable_layers}
    out = {}
    for tag, series in events.items():
        match = KERAS_WEIGHT_HISTOGRAM.match(tag)
        if not match or np.ndim(next(iter(series.values()))) != 2:
            continue
        variable = match.group("variable")
        if keep is None or variable.split("/", 1)[0] in keep:
            out[f"weights/{variable}"] = series
    return out


def _read_json(path):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _is_model_dir(path):
    return any(tf.io.gfile.exists(f"{path}/{name}") for name in ("history.json", "logs/train"))


def find_model_dirs(runs):
    """{run name: model dir} for `runs` (see the module docstring), in name order."""
    found = {}
    for path in filter(None, (p.strip().rstrip("/") for p in runs.split(","))):
        if not tf.io.gfile.isdir(path):
            raise ReportError(f"run directory {path} does not exist")
        if _is_model_dir(path):
            found[os.path.basename(path)] = path
            continue
        for entry in sorted(tf.io.gfile.listdir(path)):
            sub = f"{path}/{entry.rstrip('/')}"
            if tf.io.gfile.isdir(sub) and _is_model_dir(sub):
                found[entry.rstrip("/")] = sub
    return dict(sorted(found.items()))


def load_run(model_dir):
    """Everything the page shows about one run, as plain data."""
    history = _read_json(f"{model_dir}/history.json") or {}
    run_info = _read_json(f"{model_dir}/{artifacts.RUN_JSON}") or {}
    class_names = _read_json(f"{model_dir}/class_names.json")
    evaluations = {}
    for entry in sorted(tf.io.gfile.listdir(model_dir)):
        entry = entry.rstrip("/")
        metrics = _read_json(f"{model_dir}/{entry}/metrics.json") if entry.startswith("eval-") else None
        if metrics:
            evaluations[entry[len("eval-"):]] = metrics
    gradients_dir = f"{model_dir}/logs/gradients"
    events = read_events(gradients_dir) if tf.io.gfile.isdir(gradients_dir) else {}
    stats = read_layer_stats(gradients_dir, events)
    train_dir = f"{model_dir}/logs/train"
    weights = weight_histograms(read_events(train_dir) if tf.io.gfile.isdir(train_dir) else {},
                                run_info.get("trainable_layers"))
    num_classes = run_info.get("num_classes") or (len(class_names) if class_names else 16)
    return {"model_dir": model_dir, "history": history, "info": run_info,
            "best": _read_json(f"{model_dir}/best.json"), "evaluations": evaluations,
            "layer_stats": stats, "histograms": {**{t: v for t, v in events.items()
                                                    if np.ndim(next(iter(v.values()))) == 2},
                                                 **weights},
            "diagnoses": diagnose.diagnose(history, stats, num_classes,
                                           run_info.get("trainable_layers", ()))}


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def table_row(name, run):
    """The comparison table's row: numbers straight from history.json / run.json / metrics."""
    epochs = [run["history"][e] for e in sorted(run["history"], key=int)]
    info = run["info"]
    val = [(i + 1, logs["val_accuracy"]) for i, logs in enumerate(epochs) if "val_accuracy" in logs]
    best_epoch, best = max(val, key=lambda ev: ev[1]) if val else (None, None)
    last = epochs[-1] if epochs else {}
    return {
        "run": name, "model": info.get("model"),
        "total_params": info.get("total_params"), "trainable_params": info.get("trainable_params"),
        "epochs": len(epochs), "best_val_accuracy": best, "best_epoch": best_epoch,
        "final_loss": last.get("loss"), "final_val_loss": last.get("val_loss"),
        # the first epoch also traces the graph (and fills the feature cache): left out
        "seconds_per_epoch": _median([e.get("seconds") for e in epochs[1:] or epochs]),
        "images_per_second": _median([e.get("images_per_second") for e in epochs[1:] or epochs]),
        "precision": info.get("precision"), "replicas": info.get("replicas"),
        "image_size": info.get("image_size"),
        "evaluations": {split: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                "model": m.get("model")} for split, m in run["evaluations"].items()},
        "diagnoses": [d["code"] for d in run["diagnoses"]],
    }


def differing_flags(runs):
    """{flag: {run: value}} for the flags (run.json) whose values are not the same in all runs."""
    all_flags = {name: run["info"].get("flags", {}) for name, run in runs.items()}
    names = sorted({f for values in all_flags.values() for f in values} - set(IGNORED_FLAGS))
    return {f: {run: values.get(f) for run, values in all_flags.items()} for f in names
            if len({json.dumps(values.get(f)) for values in all_flags.values()}) > 1}


def plot_comparison(runs):
    """Loss, accuracy and learning rates of every run overlaid, one colour per run
    (training solid, validation dashed; head rate solid, backbone rate dashed)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colors = plt.cm.tab10(np.arange(len(runs)) % 10)
    panels = ((axes[0], "loss", (("loss", "-"), ("val_loss", "--"))),
              (axes[1], "accuracy", (("accuracy", "-"), ("val_accuracy", "--"))),
              (axes[2], "learning rate", (("learning_rate", "-"), ("backbone_learning_rate", "--"))))
    for color, (name, run) in zip(colors, runs.items()):
        epochs = sorted(run["history"], key=int)
        for ax, _, keys in panels:
            for key, style in keys:
                points = [(int(e) + 1, run["history"][e][key]) for e in epochs
                          if key in run["history"][e]]
                if points:
                    ax.plot(*zip(*points), style, color=color, marker="o", markersize=3,
                            label=name if style == "-" else None)
    for ax, title, _ in panels:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].set_title("loss (solid: training, dashed: validation)", fontsize=10)
    axes[1].set_title("accuracy (solid: training, dashed: validation)", fontsize=10)
    axes[2].set_title("learning rate (solid: head, dashed: fine-tuned VGG16)", fontsize=10)
    axes[1].legend(fontsize=8)
    if axes[2].has_data():
        axes[2].set_yscale("log")
    fig.tight_layout()
    return fig


def plot_layer_stats(stats, title):
    """Per layer: gradient norm, update ratio (per step) and dead-unit share, by epoch."""
    panels = (("gradient_norm", "gradient norm (dashed: fine-tuned VGG16)", "log"),
              ("update_ratio", "|last step's update| / |weights|", "log"),
              ("dead_units", "dead ReLU units (share)", "linear"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (statistic, label, scale) in zip(axes, panels):
        for layer, series in sorted(stats.get(statistic, {}).items()):
            steps = sorted(series)
            ax.plot([s + 1 for s in steps], [series[s] for s in steps], marker="o", markersize=3,
                    linestyle="--" if layer.startswith(f"{models.BACKBONE}/") else "-", label=layer)
        if statistic == "update_ratio":
            ax.axhline(diagnose.THRESHOLDS["backbone_update_ratio"], color="red", linewidth=0.8,
                       linestyle=":", label="fine-tuning limit")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.has_data():
            if scale == "log":
                ax.set_yscale("log")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged" if statistic != "dead_units" else "no ReLU layer in the head", transform=ax.transAxes, ha="center", color="gray")
    fig.suptitle(title)
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


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1320px;padding:0 1em;
color:#222;line-height:1.4} img{max-width:100%} table{border-collapse:collapse;margin:.5em 0 1em;
font-size:14px} th,td{border:1px solid #ccc;padding:3px 7px;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child,td:last-child{text-align:left} .finding{border-left:5px solid #c0392b;
background:#fdf0ee;padding:.5em .8em;margin:.5em 0} .ok{border-left:5px solid #27ae60;
background:#eefaf1;padding:.5em .8em} code{background:#eee;padding:0 3px} .cols{display:flex;
gap:1.5em;flex-wrap:wrap;align-items:flex-start} .cols img{max-width:640px}
section{border-top:2px solid #888;margin-top:2em}"""


def _table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _comparison_table(rows, flags_differing):
    header = ["run", "model", "params total / trainable", "epochs", "best val acc (epoch)",
              "final loss / val loss", "s per epoch", "train img/s", "precision", "replicas",
              "evaluation accuracy", "diagnosis"]
    cells = []
    for r in rows:
        params = (f"{r['total_params']:,} / {r['trainable_params']:,}"
                  if r["total_params"] is not None else "—")
        evals = "<br>".join(f"{html.escape(split)}: {e['accuracy']:.4f}"
                            for split, e in r["evaluations"].items()) or "not run"
        cells.append([html.escape(r["run"]), html.escape(str(r["model"] or "—")), params,
                      r["epochs"], f"{_fmt(r['best_val_accuracy'], '.4f')} ({r['best_epoch']})",
                      f"{_fmt(r['final_loss'], '.4f')} / {_fmt(r['final_val_loss'], '.4f')}",
                      _fmt(r["seconds_per_epoch"], ".1f"), _fmt(r["images_per_second"], ".0f"),
                      html.escape(str(r["precision"] or "—")), r["replicas"] or "—", evals,
                      html.escape(", ".join(r["diagnoses"]) or "none")])
    parts = [_table(header, cells)]
    if flags_differing:
        runs = [r["run"] for r in rows]
        parts.append("<p>Flags that differ between the runs:</p>" + _table(
            ["flag", *runs], [[f"<code>--{html.escape(f)}</code>",
                               *(html.escape(str(values.get(run))) for run in runs)]
                              for f, values in flags_differing.items()]))
    return "\n".join(parts)


def _diagnosis_html(findings):
    if not findings:
        return ("<div class='ok'>No rule fired (" + ", ".join(diagnose.CODES) +
                "): nothing found wrong.</div>")
    return "\n".join(f"<div class='finding'><b>{html.escape(f['code'])}</b> — "
                     f"{html.escape(f['message'])} <i>(change <code>{html.escape(f['flag'])}"
                     "</code>)</i></div>" for f in findings)


def _evaluation_html(split, metrics, confusion_png):
    rows = [[html.escape(c["class_name"]), f"{c['precision']:.3f}", f"{c['recall']:.3f}",
             f"{c['f1']:.3f}", c["support"]] for c in metrics["per_class"]]
    return (f"<h3>Evaluation on '{html.escape(split)}' ({html.escape(str(metrics.get('model')))})</h3>"
            f"<p>accuracy {metrics['accuracy']:.4f}, top-3 {metrics.get('top_3_accuracy', 0):.4f}, "
            f"loss {metrics['loss']:.4f}, macro F1 {metrics['macro_f1']:.4f} on "
            f"{metrics['num_records']} pages</p><div class='cols'>"
            + (f"<img src='{html.escape(confusion_png)}' alt='confusion matrix'>" if confusion_png
               else "")
            + _table(["class", "precision", "recall", "F1", "pages"], rows) + "</div>")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def report(config=None, **settings):
    """Writes index.html, report.json and the PNGs for the runs in `config.runs` to
    `config.output`; returns a `Report` (paths written, report.json's record). `settings`
    override fields of `config` (default ReportConfig())."""
    config = dataclasses.replace(config or ReportConfig(), **settings)
    if not config.runs:
        raise errors.UsageError("runs is required: a directory of model dirs (or a model dir)")
    runs_arg, output, max_columns = config.runs, config.output, config.max_columns
    filesystems.register(runs_arg, output)
    dirs = find_model_dirs(runs_arg)
    if not dirs:
        raise ReportError(f"no runs under {runs_arg}: expected model dirs of trainer.main "
                          "(with history.json or logs/train)")
    runs = {name: load_run(d) for name, d in dirs.items()}
    tf.io.gfile.makedirs(output)
    rows = [table_row(name, run) for name, run in runs.items()]
    flags_differing = differing_flags(runs)
    written = [_save(plot_comparison(runs), output, "comparison.png")]
    sections = []
    for name, run in runs.items():
        slug = _slug(name)
        parts = [f"<section id='{html.escape(slug)}'><h2>{html.escape(name)}</h2>",
                 f"<p>{html.escape(run['model_dir'])}</p>", _diagnosis_html(run["diagnoses"])]
        if run["layer_stats"]:
            png = _save(plot_layer_stats(run["layer_stats"], f"{name}: per-layer statistics"),
                        output, f"{slug}-layer_stats.png")
            written.append(png)
            parts.append(f"<h3>Per-layer statistics</h3><img src='{html.escape(png)}' "
                         "alt='per-layer statistics'>")
        for split, metrics in run["evaluations"].items():
            source = f"{run['model_dir']}/eval-{split}/confusion_matrix.png"
            png = None
            if tf.io.gfile.exists(source):
                png = f"{slug}-confusion-{_slug(split)}.png"
                tf.io.gfile.copy(source, f"{output}/{png}", overwrite=True)
                written.append(png)
            parts.append(_evaluation_html(split, metrics, png))
        histograms = {}
        for tag, series in run["histograms"].items():
            histograms.setdefault(tag.split("/", 1)[0], {})[tag] = series
        for family, tags in sorted(histograms.items()):
            png = _save(plot_histograms(tags, f"{name}: {family}", max_columns), output,
                        f"{slug}-{_slug(family)}.png")
            written.append(png)
            parts.append(f"<details><summary>{html.escape(family)} histograms</summary>"
                         f"<img src='{html.escape(png)}' alt='{html.escape(family)}'></details>")
        sections.append("\n".join(parts) + "</section>")
    summary = "".join(f"<li><a href='#{html.escape(_slug(n))}'>{html.escape(n)}</a>: "
                      + (html.escape(", ".join(d["code"] for d in r["diagnoses"])) or "no problem found")
                      + "</li>" for n, r in runs.items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Training report</title>"
            f"<style>{STYLE}</style></head><body><h1>Training report: {len(runs)} runs</h1>"
            f"<p>{html.escape(runs_arg)}</p><ul>{summary}</ul><h2>Comparison</h2>"
            + _comparison_table(rows, flags_differing)
            + f"<img src='{written[0]}' alt='loss, accuracy and learning rates of every run'>"
            + "\n".join(sections) + "</body></html>\n")
    with tf.io.gfile.GFile(f"{output}/index.html", "w") as f:
        f.write(page)
    record = {"runs": [{**row, "model_dir": runs[row["run"]]["model_dir"],
                        "diagnoses": runs[row["run"]]["diagnoses"]} for row in rows],
              "differing_flags": flags_differing, "thresholds": diagnose.THRESHOLDS}
    with tf.io.gfile.GFile(f"{output}/report.json", "w") as f:
        json.dump(_json_safe(record), f, indent=1)
    return Report([f"{output}/{name}" for name in written + ["index.html", "report.json"]], record)
