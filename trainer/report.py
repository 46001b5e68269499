"""Compares training runs on one page: index.html (relative PNGs) and report.json.

    python -m trainer.report --runs=runs/ --output=report/

The command line of `trainer.reporting.report` (what it reads and writes: that module); flags:
the fields of `trainer.reporting.ReportConfig`. Exit status 2 when there is nothing to report.
"""
from tfrecords_tool import cli
from trainer import reporting

cli.define_flags(reporting.ReportConfig)


def main(argv):
    cli.no_arguments(argv)
    result = reporting.report(cli.from_flags(reporting.ReportConfig))
    print("wrote " + "\n      ".join(result.paths))


if __name__ == "__main__":
    cli.run(main)
