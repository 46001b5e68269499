"""The library of every tool on s3:// paths, in one process (test_buckets starts it: one
TensorFlow start-up instead of one per tool; the tools' command lines are tested locally).

    python tests/s3_library_run.py SETTINGS_JSON

SETTINGS_JSON: {"sample": s3 dir of images/ and labels.txt, "records": s3 dir of converted
shards, "run": s3 model dir, "weights": s3 VGG16 weights file, "pages": [s3 TIFFs],
"from_s3": local dir, "report": s3 dir}. Prints one JSON document of what each step returned;
exits through filesystems.run (tensorflow-io's exit abort, tensorflow/io#2039).
"""
import json

from tfrecords_tool import conversion, filesystems, verification
from trainer import evaluation, prediction, reporting, serving, train


def main(argv):
    paths = json.loads(argv[1])
    conversion.convert(labels=f"{paths['sample']}/labels.txt", images_dir=f"{paths['sample']}/images",
                       output_dir=paths["from_s3"], image_size=32, val_fraction=0.25,
                       num_shards=2, workers=2)
    verified = {r.split: r.problems for r in verification.verify(data_dir=paths["records"])}
    trained = train(model="model2", weights=paths["weights"], data_dir=paths["records"],
                    model_dir=paths["run"], epochs=2, steps_per_epoch=2, batch_size=8)
    metrics = evaluation.evaluate(model_dir=paths["run"], data_dir=paths["records"], split="val")
    predicted = prediction.predict(model_dir=paths["run"], pages=paths["pages"])
    exported = serving.export(model_dir=paths["run"])
    reported = reporting.report(runs=paths["run"], output=paths["report"])
    print(json.dumps({"verified": verified, "epochs": len(trained.history["loss"]),
                      "evaluated": evaluation.describe(metrics),
                      "predicted": [page._asdict() for page in predicted],
                      "exported": exported, "reported": reported.paths}))


if __name__ == "__main__":
    filesystems.run(main)
