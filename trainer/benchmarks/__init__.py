"""The throughput benchmark as a library: `run.bench(BenchConfig(...))` returns bench.json's dict.

    config.py            BenchConfig: every setting (one `python -m trainer.bench` flag each)
    machine.py           the machine: cores, CPU model (/proc/cpuinfo), TF, GPUs, parallel capacity
    spin.py              the pure-Python loop parallel_capacity runs in several processes at once
    reference.py         the reference notebook's loader (ImageDataGenerator.flow_from_dataframe)
    converter_stages.py  the converter: per-page stages, whole conversions in a helper
    convert_driver.py    that helper process (`python -m trainer.benchmarks.convert_driver`)
    pipeline_stages.py   the trainer's tf.data pipeline, jpeg drift, the augmentation layer on the CPU
    training_stages.py   cached vs uncached epochs, training steps (pipeline vs in-memory batch)
    targets.py           the targets, read from docs/benchmarks.md, checked against a result
    run.py               all stages in order -> the result dict (bench.json)
    table.py             the result as the table the command prints

What every key means, its target and why: docs/benchmarks.md.
"""
