"""Evaluates a trained model on a whole split of converted TFRecords.

    python -m trainer.evaluate --model_dir=RUN --data_dir=DATA --split=test [--checkpoint=best]

Writes `{model_dir}/eval-{split}/metrics.json` and `confusion_matrix.png` (trainer.evaluation).
"""
from tfrecords_tool import cli
from trainer import evaluation


def main(argv):
    cli.no_arguments(argv)
    config = cli.from_flags(evaluation.EvaluateConfig)
    metrics = evaluation.evaluate(config)
    out_dir = evaluation.output_dir(config)
    print(f"{evaluation.describe(metrics)}\n"
          f"wrote {out_dir}/metrics.json and {out_dir}/confusion_matrix.png")


if __name__ == "__main__":
    cli.define_flags(evaluation.EvaluateConfig)
    cli.run(main)
