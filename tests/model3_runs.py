"""Model 3 trained briefly on the sample with the reference recipe and the recommended one,
made once per session, for the diagnosis and report tests.

In this process through the library: sample.generate and conversion.convert (24 pages per class
at 48 px, 80/20 split: 307/77 pages), then two trainer runs (`train_here`: trainer.main's flags;
random VGG16 weights, 3 epochs of 38 steps of batch 8) differing only in
--backbone_learning_rate: 1e-3 (the reference notebook's single rate for everything) and 1e-5
(configs/model3.cfg). Measured (WORKSPACE.md): val accuracy 5.2/6.5/6.5% vs 6.5/7.8/13.0%; the
reference's largest backbone update ratio 8e-3/3e-3/6e-3 per step (threshold 1e-3). At 32 px
the reference's ratio decays below the threshold and the recommended run stays at chance.
The recommended run is then evaluated (best checkpoint) so that the report has a metrics.json
to show.
"""
import types

import pytest

from trainer_fixtures import base_args, train_here

EPOCHS = 3
RATES = {"reference": "1e-3", "recommended": "1e-5"}


@pytest.fixture(scope="session")
def model3_runs(tmp_path_factory):
    """Namespace(data_dir, runs_dir, reference, recommended): runs_dir holds both model dirs."""
    from tfrecords_tool import sample
    from tfrecords_tool.conversion import convert
    from trainer.evaluation import evaluate

    root = tmp_path_factory.getbasetemp() / "model3_runs"
    run = types.SimpleNamespace(data_dir=root / "data", runs_dir=root / "runs",
                                **{name: root / "runs" / name for name in RATES})
    if (run.recommended / "eval-val" / "metrics.json").exists():
        return run
    sample.generate(root / "sample", pages_per_class=24, seed=0)
    convert(labels=str(root / "sample" / "labels.txt"), images_dir=str(root / "sample" / "images"),
            output_dir=str(run.data_dir), image_size=48, val_fraction=0.2, seed=0, workers=0)
    for name, rate in RATES.items():
        train_here(*base_args(run.data_dir, root / "runs" / name, f"--backbone_learning_rate={rate}",
                              "--histogram_freq=1", "--seed=0", model="model3", epochs=EPOCHS,
                              batch_size=8)).check()
    evaluate(model_dir=str(run.recommended), data_dir=str(run.data_dir), split="val",
             checkpoint="best")
    return run
