"""The machine a benchmark runs on: cores, CPU model, versions, GPUs, and how many cores this
process can actually get in parallel right now (other sessions share them)."""
import os
import platform
import subprocess
import sys

import tensorflow as tf
import tf_keras as keras

SPIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spin.py")


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The first `model name` line of /proc/cpuinfo, else what `platform` knows."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parallel_capacity(processes, n=3_000_000):
    """Cores this benchmark can get right now: `processes` copies of a pure-Python loop run at
    once, each timed against the same loop run alone (2.0 on an idle 2-core machine)."""
    def run(count):
        procs = [subprocess.Popen([sys.executable, SPIN, str(n)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(count)]
        return [float(p.communicate()[0]) for p in procs]
    alone = min(run(1)[0] for _ in range(2))
    together = run(processes)
    return round(sum(alone / t for t in together), 2)


def machine_info():
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "cpu_cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "gpus": [gpu.name for gpu in gpus],
        "gpu": bool(gpus),
    }
