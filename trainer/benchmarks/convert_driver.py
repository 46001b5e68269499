"""The converter, run on request in a process of its own:

    python -m trainer.benchmarks.convert_driver

Why a separate process: the benchmark's own process has run TensorFlow (the reference loader,
later the pipelines and models), so it has TF's thread pools and a large heap. Page workers
forked from it, and a 1-worker conversion decoding in it, would not be what `python -m
tfrecords_tool.convert` runs; and the CPU time of its finished children (what tells how many
cores a conversion got) would include the benchmark's other helpers. Interpreter start-up happens
once, before the first job, so each conversion is timed alone and several are affordable.

Protocol (one JSON object per line): prints {"ready": pid}; then for each job read from stdin
(the converter's settings under its flag names: labels, images_dir, output_dir, image_size,
image_format, split, workers) converts into an emptied output_dir and prints
{"seconds": wall seconds of the conversion, "cpu_s": CPU seconds of this process and its page
workers during it}. Ends at the end of stdin.
"""
import json
import os
import resource
import shutil
import sys
import time

from tfrecords_tool import conversion


def cpu_seconds():
    """User + system CPU time of this process and of its finished children (the page workers)."""
    own, children = (resource.getrusage(who)
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_conversion(settings):
    """The converter's library function on its own settings; 1 worker decodes in-process
    (workers=0), as the bench has always measured it."""
    conversion.convert(**dict(settings, workers=settings["workers"] if settings["workers"] > 1
                              else 0))


def serve(lines, out):
    """Runs every job of `lines`, writing one reply per job to `out`."""
    for line in lines:
        job = json.loads(line)
        if os.path.exists(job["output_dir"]):
            shutil.rmtree(job["output_dir"])  # the converter keeps complete shards: start afresh
        cpu, start = cpu_seconds(), time.perf_counter()
        run_conversion(job)
        seconds = time.perf_counter() - start
        out.write(json.dumps({"seconds": seconds, "cpu_s": cpu_seconds() - cpu}) + "\n")
        out.flush()


if __name__ == "__main__":
    print(json.dumps({"ready": os.getpid()}), flush=True)
    serve(sys.stdin, sys.stdout)
