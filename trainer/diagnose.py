"""Rules that read a finished (or running) training run and say, in words, what went wrong.

`diagnose(history, layer_stats, num_classes, ...)` takes the epoch logs (history.json) and the
per-layer statistics that trainer.callbacks.GradientHistograms logs (`layer_stats/...`) and
returns findings: {"code", "message", "flag", "evidence"}. Thresholds are in THRESHOLDS; they
were measured on the generated sample (WORKSPACE.md, "Diagnosis rules").
"""
import math

import numpy as np

from trainer import callbacks, models

THRESHOLDS = {
    # stuck_at_chance: val accuracy <= chance_factor x chance in each of the last chance_epochs.
    "chance_factor": 1.5,
    "chance_epochs": 3,
    # backbone_too_fast: median over logged epochs of the largest fine-tuned layer's per-step
    # update ratio above this.
    "backbone_update_ratio": 1e-3,
    # vanishing_gradients: first trainable layer's gradient norm / the output layer's, below this.
    "vanishing_ratio": 1e-2,
    # exploding_gradients: a layer's gradient norm above this many times its first logged value.
    "exploding_growth": 1e3,
    # overfitting: the reference rule (docs/models.md, "The reference stopping rule").
    "overfit_gap": 0.25,
    "falling_patience": 3,
    # dead_units: share of a head ReLU layer's units dead at the last logged epoch above
    # dead_fraction and grown by at least dead_growth since the first logged epoch.
    "dead_fraction": 0.5,
    "dead_growth": 0.10,
}

CODES = ("stuck_at_chance", "backbone_too_fast", "vanishing_gradients", "nonfinite_gradients",
         "exploding_gradients", "overfitting", "dead_units")


def _finding(code, message, flag, **evidence):
    return {"code": code, "message": message, "flag": flag, "evidence": evidence}


def _epochs(history):
    """[(epoch number from 1, logs)] in order."""
    return [(int(e) + 1, logs) for e, logs in sorted(history.items(), key=lambda kv: int(kv[0]))]


def _series(stats, statistic):
    """{layer: [(epoch from 1, value)]} of one statistic."""
    return {layer: [(step + 1, v) for step, v in sorted(values.items())]
            for layer, values in stats.get(statistic, {}).items()}


def _is_backbone(layer):
    return layer.startswith(f"{models.BACKBONE}/")


def backbone_too_fast(stats, t):
    ratios = {layer: s for layer, s in _series(stats, "update_ratio").items() if _is_backbone(layer)}
    if not ratios:
        return None
    steps = sorted({e for s in ratios.values() for e, _ in s})
    largest = [max(dict(s).get(e, 0.0) for s in ratios.values()) for e in steps]
    median = float(np.median(largest))
    if not median > t["backbone_update_ratio"]:
        return None
    layer = max(ratios, key=lambda name: np.median([v for _, v in ratios[name]]))
    return _finding(
        "backbone_too_fast",
        f"The fine-tuned VGG16 layers change too fast: each optimizer step changes their weights "
        f"by {median:.1e} of their norm (median over {len(steps)} logged epochs of the largest "
        f"layer; {layer} the fastest), above {t['backbone_update_ratio']:.0e} per step. That "
        "overwrites what the backbone knew before the new head has learned anything. Lower "
        "--backbone_learning_rate (configs/model3.cfg: 1e-5).",
        "--backbone_learning_rate",
        median_update_ratio=median, threshold=t["backbone_update_ratio"], fastest_layer=layer,
        update_ratio_by_epoch={name: dict(s) for name, s in ratios.items()})


def stuck_at_chance(epochs, num_classes, t, cause=None):
    """Validation accuracy within `chance_factor` x chance in each of the last `chance_epochs`
    epochs: a run that starts slowly and then learns is not stuck; one that rose a little above
    chance once and fell back is."""
    accuracies = [(e, logs["val_accuracy"]) for e, logs in epochs if "val_accuracy" in logs]
    k = t["chance_epochs"]
    if len(accuracies) < k:
        return None
    chance = 1.0 / num_classes
    limit = t["chance_factor"] * chance
    last = accuracies[-k:]
    if max(a for _, a in last) > limit:
        return None
    values = ", ".join(f"{a:.1%}" for _, a in last)
    best_epoch, best = max(accuracies, key=lambda ea: ea[1])
    if cause:
        why = (" Likely cause: the fine-tuned layers change too fast "
               f"({cause['evidence']['median_update_ratio']:.1e} of their norm per step, threshold "
               f"{cause['evidence']['threshold']:.0e}): lower --backbone_learning_rate.")
        flag = "--backbone_learning_rate"
    else:
        why, flag = " Lower --learning_rate, or check the labels and the data.", "--learning_rate"
    return _finding(
        "stuck_at_chance",
        f"Stuck at chance: over the last {k} epochs ({values}) validation accuracy stayed within "
        f"{t['chance_factor']}x chance ({chance:.1%} for {num_classes} classes, limit "
        f"{limit:.1%}); its best was {best:.1%} at epoch {best_epoch}.{why}",
        flag, last_epochs=k, chance=chance, limit=limit,
        val_accuracy=[a for _, a in accuracies], cause=cause["code"] if cause else None)


def gradient_findings(stats, layer_order, t):
    """vanishing, non-finite and exploding gradients."""
    norms = _series(stats, "gradient_norm")
    found = []
    bad = sorted({(layer, e) for statistic in stats for layer, s in _series(stats, statistic).items()
                  for e, v in s if not math.isfinite(v)}, key=lambda x: (x[1], x[0]))
    if bad:
        found.append(_finding(
            "nonfinite_gradients",
            f"Non-finite statistics (NaN/inf) at epoch {bad[0][1]} in {bad[0][0]} "
            f"({len(bad)} layer-epochs in all): the weights or gradients overflowed. Lower "
            "--learning_rate (and --backbone_learning_rate), or train with --precision=float32.",
            "--learning_rate", first_epoch=bad[0][1], layers=sorted({b[0] for b in bad})))
    order = [layer for layer in layer_order if layer in norms] or sorted(norms)
    if len(order) >= 2:
        first, last = dict(norms[order[0]]), dict(norms[order[-1]])
        ratios = {e: first[e] / last[e] for e in first if e in last and last[e] > 0
                  and math.isfinite(first[e]) and math.isfinite(last[e])}
        low = {e: r for e, r in ratios.items() if r < t["vanishing_ratio"]}
        if ratios and len(low) == len(ratios):
            found.append(_finding(
                "vanishing_gradients",
                f"Vanishing gradients: {order[0]}'s gradient norm is {max(low.values()):.1e} or "
                f"less of {order[-1]}'s at every logged epoch (threshold "
                f"{t['vanishing_ratio']:.0e}): the early layers barely learn. Use pretrained "
                "--weights (imagenet or a weights file) rather than a random init.",
                "--weights", first_layer=order[0], output_layer=order[-1],
                ratio_by_epoch=ratios, threshold=t["vanishing_ratio"]))
    for layer in order:
        values = [(e, v) for e, v in norms[layer] if math.isfinite(v)]
        if len(values) >= 2 and values[0][1] > 0:
            epoch, peak = max(values[1:], key=lambda ev: ev[1])
            if peak / values[0][1] > t["exploding_growth"]:
                found.append(_finding(
                    "exploding_gradients",
                    f"Exploding gradients: {layer}'s gradient norm grew {peak / values[0][1]:.0f}x "
                    f"from epoch {values[0][0]} to epoch {epoch} (threshold "
                    f"{t['exploding_growth']:.0f}x). Lower --learning_rate.",
                    "--learning_rate", layer=layer, first=values[0][1], peak=peak, epoch=epoch,
                    threshold=t["exploding_growth"]))
                break
    return found


def overfitting(epochs, t):
    reasons, val_accuracies = [], []
    for epoch, logs in epochs:
        reason = callbacks.reference_rule(logs, val_accuracies, t["overfit_gap"],
                                          t["falling_patience"])
        if reason:
            reasons.append((epoch, reason))
    if not reasons:
        return None
    epoch, reason = reasons[0]
    return _finding(
        "overfitting",
        f"Overfitting by the reference rule from epoch {epoch}: {reason}. Keep the best "
        "checkpoint (--checkpoint=best when evaluating) and stop there with "
        "--early_stopping=reference, or regularise with --augment=light.",
        "--early_stopping", first_epoch=epoch, reason=reason,
        epochs=[e for e, _ in reasons])


def dead_units(stats, t):
    for layer, s in sorted(_series(stats, "dead_units").items()):
        if len(s) >= 1:
            first, last = s[0][1], s[-1][1]
            if last > t["dead_fraction"] and last - first >= t["dead_growth"]:
                return _finding(
                    "dead_units",
                    f"Dead ReLU units: {last:.0%} of {layer}'s units are zero for every page of "
                    f"the fixed batch at epoch {s[-1][0]} (from {first:.0%} at epoch {s[0][0]}; "
                    f"thresholds {t['dead_fraction']:.0%} and +{t['dead_growth']:.0%}): large "
                    "updates pushed them below zero for good. Lower --learning_rate.",
                    "--learning_rate", layer=layer, first=first, last=last,
                    by_epoch=dict(s))
    return None


def diagnose(history, layer_stats, num_classes, layer_order=(), thresholds=None):
    """Findings for one run, most fundamental first (an empty list: no rule fired).

    history: {epoch index: logs} (history.json); layer_stats: {statistic: {layer path:
    {epoch index: value}}}; layer_order: trainable layer paths input to output (run.json).
    """
    t = {**THRESHOLDS, **(thresholds or {})}
    epochs = _epochs(history)
    too_fast = backbone_too_fast(layer_stats, t)
    found = [stuck_at_chance(epochs, num_classes, t, cause=too_fast), too_fast,
             *gradient_findings(layer_stats, list(layer_order), t),
             overfitting(epochs, t), dead_units(layer_stats, t)]
    return [f for f in found if f]
