"""Trains one of the three VGG16 transfer-learning models on converted TFRecords.

    python -m trainer.main --model=model1 --data_dir=DATA --model_dir=RUN [--flagfile=configs/model1.cfg]

Run the same command again after a kill or preemption and it resumes where it stopped. One flag
per field of `trainer.training.TrainConfig`; exit statuses: README "Exit status".
"""
from absl import flags

from tfrecords_tool import cli
from trainer import training

FLAGS = flags.FLAGS


def main(argv):
    cli.no_arguments(argv)
    config = cli.from_flags(training.TrainConfig)
    if FLAGS.summary_only:
        text, total, trainable = training.model_summary(config)
        print(f"{text}\n{config.model}: total {total:,}; trainable {trainable:,}; "
              f"non-trainable {total - trainable:,}")
        return
    result = training.train(config)
    if result.is_chief:
        print(result.summary())


if __name__ == "__main__":
    cli.define_flags(training.TrainConfig)
    flags.DEFINE_bool("summary_only", False,
                      "Print the model summary and parameter counts, then exit.")
    cli.run(main)
