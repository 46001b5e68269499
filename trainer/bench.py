"""Throughput benchmark: the reference TIFF loader vs the converter and the trainer's pipeline.

    python -m trainer.bench --output=bench.json

One flag per field of `trainer.benchmarks.config.BenchConfig`; the run is
`trainer.benchmarks.run.bench`. It writes --output (JSON) and prints the figures as a table.
What every key means, its target and why: docs/benchmarks.md.
"""
import os
import sys

from tfrecords_tool import cli
from trainer.benchmarks import config as bench_config
from trainer.benchmarks import run, table


def main(argv):
    cli.no_arguments(argv)
    config = cli.from_flags(bench_config.BenchConfig)
    result = run.bench(config)
    result["command"] = " ".join([os.path.basename(sys.executable), "-m", "trainer.bench"]
                                 + sys.argv[1:])
    run.write(result, config.output)
    print(table.table(result))
    print(f"wrote {config.output} in {result['wall_s']} s")


if __name__ == "__main__":
    cli.define_flags(bench_config.BenchConfig)
    cli.run(main)
