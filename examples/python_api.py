"""The Python API, notebook style: sample pages -> TFRecords -> model2 -> its history.

    .venv/bin/python examples/python_api.py [WORK_DIR]     # ~1 minute on 2 CPU cores

Each step is one call that takes settings and returns results: the same library the command
line tools (`python -m tfrecords_tool.convert`, `python -m trainer.main`, ...) run.
"""
import sys
import tempfile

from tfrecords_tool import sample
from tfrecords_tool.conversion import convert
from trainer import TrainConfig, train
from trainer.evaluation import evaluate

work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="python-api-")
sample.generate(f"{work}/sample", pages_per_class=8, seed=0, max_side=400)
convert(labels=f"{work}/sample/labels.txt", images_dir=f"{work}/sample/images",
        output_dir=f"{work}/data", image_size=64, val_fraction=0.25, workers=0)

result = train(TrainConfig(model="model2", data_dir=f"{work}/data", model_dir=f"{work}/model2",
                           weights="none", epochs=3, batch_size=16))
for epoch, (loss, val_accuracy) in enumerate(zip(result.history["loss"],
                                                 result.history["val_accuracy"]), 1):
    print(f"epoch {epoch}: loss {loss:.3f}  val_accuracy {val_accuracy:.3f}")
print("best model:", result.best_model, "TensorBoard:", result.tensorboard_dir)

metrics = evaluate(model_dir=result.model_dir, data_dir=f"{work}/data", split="val")
print(f"val accuracy of final.keras: {metrics['accuracy']:.3f}")
