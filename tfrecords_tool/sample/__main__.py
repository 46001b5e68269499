"""The command line: `python -m tfrecords_tool.sample --output_dir=DIR` writes the sample."""
import dataclasses
import sys
import time
from typing import Optional

from tfrecords_tool import cli
from tfrecords_tool import errors
from tfrecords_tool.sample.dataset import generate
from tfrecords_tool.sample.tiff import ALL_ENCODINGS, ENCODINGS


@dataclasses.dataclass
class SampleConfig:
    """The sample's settings; one flag each."""
    output_dir: Optional[str] = cli.setting(
        None, "Directory to write images/, labels.txt, labels.csv (required).")
    pages_per_class: int = cli.setting(8, "Pages per class (16 classes).", lower_bound=1)
    seed: int = cli.setting(0, "Random seed; the same seed gives identical files.")
    max_side: int = cli.setting(1000, "Longest page side in pixels.", lower_bound=32)
    all_encodings: bool = cli.setting(
        False, "Rotate through every TIFF variant (ALL_ENCODINGS) instead of the five common ones.")


def main(argv):
    cli.no_arguments(argv)
    config = cli.from_flags(SampleConfig)
    if not config.output_dir:
        raise errors.UsageError("--output_dir is required")
    start = time.perf_counter()
    info = generate(config.output_dir, config.pages_per_class, seed=config.seed,
                    max_side=config.max_side,
                    encodings=ALL_ENCODINGS if config.all_encodings else ENCODINGS)
    enc = ", ".join(f"{k} {v}" for k, v in sorted(info["encoding_counts"].items()))
    print(f"wrote {info['num_pages']} pages ({info['num_classes']} classes x "
          f"{info['pages_per_class']}) to {info['images_dir']} with {info['labels_txt']} and "
          f"{info['labels_csv']} in {time.perf_counter() - start:.1f}s [{enc}]")
    sys.stdout.flush()


if __name__ == "__main__":
    cli.define_flags(SampleConfig)
    cli.run(main)
