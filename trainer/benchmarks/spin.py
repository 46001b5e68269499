"""A pure-Python loop that prints its own duration: `python spin.py N`.

machine.parallel_capacity runs copies of this file at once; it is run by path, not with `-m`, so
that the process imports nothing but `time` (the trainer package would load TensorFlow).
"""
import sys
import time


def spin(n):
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - start


if __name__ == "__main__":
    print(spin(int(sys.argv[1])))
