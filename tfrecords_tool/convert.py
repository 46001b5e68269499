r"""Converts labelled TIFF pages into sharded TFRecords: the command line of
`tfrecords_tool.conversion` (one flag per ConvertConfig field; `--helpfull` lists them).

  python -m tfrecords_tool.convert --labels=rvl-cdip/val.txt --images_dir=rvl-cdip \
      --output_dir=gs://bucket/rvl-224

Rerun with the same flags after a kill: complete shards are kept. `--task_index` of
`--num_tasks` (default: the batch system's variables) share the work between machines.
Exit status 0, or 2 with one `error:` line (tfrecords_tool.errors).
"""
from absl import flags
import tensorflow as tf

from tfrecords_tool import cli
from tfrecords_tool import conversion
from tfrecords_tool import errors


def main(argv):
    cli.no_arguments(argv)
    try:
        conversion.convert(cli.from_flags(conversion.ConvertConfig))
    except tf.errors.OpError as e:  # a file system's error: its message, not a traceback
        raise errors.ToolError(e.message) from e


if __name__ == "__main__":
    cli.define_flags(conversion.ConvertConfig)
    flags.mark_flags_as_required(["images_dir", "output_dir"])
    cli.run(main)
