"""Checks converted shards against their manifests: the command line of
`tfrecords_tool.verification`.

  python -m tfrecords_tool.verify --data_dir=gs://bucket/rvl-224 [--split=val]

Prints an OK line per split, or each problem on stderr. Exit status 0; 1 when a split failed
(the others are still checked); 2 when there is no manifest to check (tfrecords_tool.errors).
"""
import sys

from absl import flags

from tfrecords_tool import cli
from tfrecords_tool import errors
from tfrecords_tool import verification


def main(argv):
    cli.no_arguments(argv)
    results = verification.verify(cli.from_flags(verification.VerifyConfig))
    for split, problems, split_manifest in results:
        for problem in problems:
            print(f"verify: {split}: {problem}", file=sys.stderr)
        if not problems:
            size = split_manifest["image_size"]
            print(f"OK {split}: {split_manifest['num_records']} records in "
                  f"{len(split_manifest['shards'])} shards, {size}x{size} "
                  f"{split_manifest['image_format']}, {len(split_manifest['skipped'])} pages "
                  "skipped at conversion")
    failed = sum(bool(result.problems) for result in results)
    if failed:
        raise errors.SomeInputsFailed(f"{failed} of {len(results)} splits failed")


if __name__ == "__main__":
    cli.define_flags(verification.VerifyConfig)
    flags.mark_flag_as_required("data_dir")
    cli.run(main)
