"""trainer.diagnose: the rules on real model3 training and on constructed cases at their
thresholds."""
import json
import math

from model3_runs import EPOCHS, model3_runs  # noqa: F401
from trainer import diagnose
from trainer.reporting import load_run

T = diagnose.THRESHOLDS


def _codes(findings):
    return [f["code"] for f in findings]


def test_reference_recipe_is_stuck_at_chance_because_fine_tuning_is_too_fast(model3_runs):  # noqa: F811
    reference = load_run(str(model3_runs.reference))
    recommended = load_run(str(model3_runs.recommended))
    assert len(reference["history"]) == len(recommended["history"]) == EPOCHS

    stuck = next(f for f in reference["diagnoses"] if f["code"] == "stuck_at_chance")
    assert stuck["evidence"]["cause"] == "backbone_too_fast"
    assert stuck["flag"] == "--backbone_learning_rate"
    assert max(stuck["evidence"]["val_accuracy"][-T["chance_epochs"]:]) <= T["chance_factor"] / 16
    too_fast = next(f for f in reference["diagnoses"] if f["code"] == "backbone_too_fast")
    assert too_fast["evidence"]["median_update_ratio"] > T["backbone_update_ratio"]
    assert too_fast["evidence"]["fastest_layer"].startswith("vgg16/")

    codes = _codes(recommended["diagnoses"])
    assert "stuck_at_chance" not in codes and "backbone_too_fast" not in codes
    with open(model3_runs.recommended / "history.json") as f:
        assert max(e["val_accuracy"] for e in json.load(f).values()) > T["chance_factor"] / 16


def _history(val_accuracies, loss=2.0, val_loss=2.0):
    return {str(i): {"loss": loss, "val_loss": val_loss, "accuracy": a, "val_accuracy": a}
            for i, a in enumerate(val_accuracies)}


def test_stuck_at_chance_needs_the_last_k_epochs_within_the_limit():
    limit = T["chance_factor"] / 16
    k = T["chance_epochs"]
    assert _codes(diagnose.diagnose(_history([limit * 0.99] * k), {}, 16)) == ["stuck_at_chance"]
    found = diagnose.diagnose(_history([0.5] + [limit * 0.99] * k), {}, 16)[0]  # fell back
    assert found["evidence"]["last_epochs"] == k and "its best was 50.0% at epoch 1" in found["message"]
    assert found["flag"] == "--learning_rate"  # no fine-tuning evidence: not the backbone rate
    assert diagnose.diagnose(_history([limit * 0.99] * k + [0.5]), {}, 16) == []  # learns now
    assert diagnose.diagnose(_history([limit * 0.99] * (k - 1)), {}, 16) == []
    assert diagnose.diagnose(_history([limit * 0.99] * (k - 1) + [limit * 1.01]), {}, 16) == []


def _stats(statistic, by_layer):
    return {statistic: {layer: dict(enumerate(values)) for layer, values in by_layer.items()}}


def test_backbone_update_ratio_threshold_applies_to_fine_tuned_layers_only():
    above, below = T["backbone_update_ratio"] * 1.1, T["backbone_update_ratio"] * 0.9
    fast = _stats("update_ratio", {"vgg16/block5_conv1": [above] * 3, "predictions": [below] * 3})
    assert _codes(diagnose.diagnose({}, fast, 16)) == ["backbone_too_fast"]
    head_only = _stats("update_ratio", {"vgg16/block5_conv1": [below] * 3, "predictions": [1.0] * 3})
    assert diagnose.diagnose({}, head_only, 16) == []


def test_gradient_rules():
    order = ["vgg16/block4_conv3", "conv_fc1", "predictions"]
    small = T["vanishing_ratio"] * 0.5
    vanishing = _stats("gradient_norm", {"vgg16/block4_conv3": [small, small], "conv_fc1": [1, 1],
                                         "predictions": [1, 1]})
    assert _codes(diagnose.diagnose({}, vanishing, 16, order)) == ["vanishing_gradients"]
    # the same norms with the layers in the other order: the first layer is not the small one
    assert diagnose.diagnose({}, vanishing, 16, order[::-1]) == []
    growth = T["exploding_growth"]
    exploding = _stats("gradient_norm", {"conv_fc1": [1, growth * 2], "predictions": [1, growth * 2]})
    assert _codes(diagnose.diagnose({}, exploding, 16, order)) == ["exploding_gradients"]
    healthy = _stats("gradient_norm", {"conv_fc1": [1, growth / 2], "predictions": [1, growth / 2]})
    assert diagnose.diagnose({}, healthy, 16, order) == []
    nan = _stats("gradient_norm", {"conv_fc1": [1, math.nan], "predictions": [1, 1]})
    assert "nonfinite_gradients" in _codes(diagnose.diagnose({}, nan, 16, order))


def test_overfitting_and_dead_units():
    gap = T["overfit_gap"]
    assert _codes(diagnose.diagnose(_history([0.5] * 3, 1.0, 1.0 + gap + 0.01), {}, 16)) == ["overfitting"]
    assert diagnose.diagnose(_history([0.5] * 3, 1.0, 1.0 + gap - 0.01), {}, 16) == []
    falling = diagnose.diagnose(_history([0.5, 0.6, 0.55, 0.58, 0.54]), {}, 16)
    assert _codes(falling) == ["overfitting"] and falling[0]["evidence"]["first_epoch"] == 5

    limit, growth = T["dead_fraction"], T["dead_growth"]
    died = _stats("dead_units", {"conv_fc1": [limit - growth, limit + 0.01]})
    assert _codes(diagnose.diagnose({}, died, 16)) == ["dead_units"]
    dead_from_start = _stats("dead_units", {"conv_fc1": [limit + 0.01, limit + 0.02]})
    assert diagnose.diagnose({}, dead_from_start, 16) == []
