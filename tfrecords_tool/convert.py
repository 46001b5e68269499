r"""Converts labelled TIFF pages into sharded TFRecords: the command line of
`tfrecords_tool.conversion` (one flag per ConvertConfig field; `--helpfull` lists them).

  python -m tfrecords_tool.convert --labels=rvl-cdip/val.txt --images_dir=rvl-cdip \
      --output_dir=gs://bucket/rvl-224

Rerun with the same flags after a kill: complete shards are kept. `--task_index` of
`--num_tasks` (default: the batch system's variables) share the work between machines.
Exit status 0, or 2 with one `error:` line (tfrecords_tool.errors).
"""
from absl import flags

from tfrecords_tool import cli
from tfrecords_tool import conversion


def main(argv):
    cli.no_arguments(argv)
    conversion.convert(cli.from_flags(conversion.ConvertConfig))


if __name__ == "__main__":
    cli.define_flags(conversion.ConvertConfig)
    flags.mark_flags_as_required(["images_dir", "output_dir"])
    cli.run(main)
