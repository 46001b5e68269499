"""The benchmark's settings: one field per `python -m trainer.bench` flag (docs/benchmarks.md)."""
import dataclasses
import os
from typing import List, Optional

from tfrecords_tool.cli import setting
from trainer import distribute


@dataclasses.dataclass
class BenchConfig(distribute.DistributionConfig):
    """Every setting of a benchmark run; `dataclasses.asdict` of it is bench.json's `settings`."""
    output: str = setting("bench.json", "JSON file for the results.")
    stages: List[str] = setting(
        ("inputs", "loop", "load"), "What to measure: inputs (reference loader, converter, "
        "pipeline, cached epochs, training steps), training (only the training steps of "
        "--train_models, on a conversion of its own: scripts/gpu_check.sh), loop (the training "
        "loop's own overhead), load (loading a saved model), assignment (the reference "
        "assignment end to end both ways: ~8 min on 2 cores).")
    work_dir: Optional[str] = setting(None, "Parent of the temporary work directory (default: "
                                      "the system's temporary directory).")
    keep_work_dir: bool = setting(False, "Keep the generated pages and records.")
    pages_per_class: int = setting(80, "Generated TIFF pages per class (16 classes).",
                                   lower_bound=1)
    max_side: int = setting(1000, "Longest side of the generated pages (RVL-CDIP: 1000).",
                            lower_bound=32)
    seed: int = setting(0, "Seed of the sample pages, shuffles and model weights.")
    image_size: int = setting(224, "Image size of the reference loader, the converter and the "
                              "pipeline.", lower_bound=8)
    seed_batch_size: int = setting(32, "Batch size of the reference loader.", lower_bound=1)
    stage_pages: int = setting(256, "Pages timed stage by stage (decode, resize filters).",
                               lower_bound=1)
    workers: int = setting(os.cpu_count(), "Converter workers of the 'all cores' run.",
                           lower_bound=1)
    batch_size: int = setting(256, "Batch size of the pipeline measurements.", lower_bound=1)
    shuffle_buffer: int = setting(4096, "Shuffle buffer (trainer.main's default).", lower_bound=0)
    record_copies: int = setting(8, "The pipeline reads this many copies (hard links) of the "
                                 "converted shards, like a data set of many shards.",
                                 lower_bound=1)
    warmup_batches: int = setting(24, "Pipeline batches skipped before timing (the shuffle "
                                  "buffer fills).", lower_bound=0)
    timed_batches: int = setting(60, "Pipeline batches timed per measurement.", lower_bound=1)
    convert_repeats: int = setting(5, "Conversions with 1 and with --workers workers "
                                   "(alternating); the fastest of each counts.", lower_bound=1)
    convert_budget_s: float = setting(30.0, "After --convert_repeats pairs, more pairs are run "
                                      "while the fastest --workers run got under 90% of its "
                                      "cores (other processes held them) and these seconds, "
                                      "counted from the first conversion, are not spent.",
                                      lower_bound=0)
    png_timed_batches: int = setting(20, "Batches timed per png and jpeg pipeline measurement "
                                     "(they decode ~10x slower than raw).", lower_bound=1)
    jpeg_qualities: List[str] = setting(("75", "85", "90", "95"), "JPEG qualities of jpeg_drift.")
    repeats: int = setting(3, "Measurements of each throughput; the best is reported.",
                           lower_bound=1)
    augment_level: str = setting("strong", "Augmentation level of augment_cpu_img_s.",
                                 choices=("light", "strong"))
    augment_batch_size: int = setting(32, "Batch size of augment_cpu_img_s.", lower_bound=1)
    augment_batches: int = setting(10, "Batches timed per augment_cpu_img_s measurement.",
                                   lower_bound=1)
    cache_model: str = setting("model1", "Model of the cached-epoch measurement.",
                               choices=("model1", "model2"))
    cache_image_size: int = setting(128, "Image size of the cached-epoch measurement (model1 "
                                    "needs >= 128).", lower_bound=32)
    cache_records: int = setting(256, "Pages converted for the cached-epoch measurement.",
                                 lower_bound=1)
    timed_epochs: int = setting(2, "Epochs timed (after one warm-up epoch) for each of the "
                                "uncached and cached fits; the fastest counts.", lower_bound=1)
    train_models: Optional[List[str]] = setting(
        None, "Models whose training steps are timed (default: model1,model3 when a GPU is "
        "visible, none on a CPU, where a VGG16 step at 224 px takes seconds).")
    train_batch_size: int = setting(256, "Global batch size of the training measurement.",
                                    lower_bound=1)
    train_steps: int = setting(20, "Steps per timed training epoch (after one warm-up epoch of "
                               "as many steps).", lower_bound=1)
    cache_batch_size: int = setting(32, "Batch size of the cached-epoch measurement "
                                    "(trainer.main's default).", lower_bound=1)
    precision: str = setting("auto", "Keras mixed precision policy; auto = mixed_float16 on GPU, "
                             "float32 otherwise.", choices=distribute.PRECISIONS)
    loop_steps_cached: int = setting(300, "Steps per timed epoch of the loop overhead of model1's "
                                     "cached head (batch --cache_batch_size).", lower_bound=1)
    loop_steps_model2: int = setting(12, "Steps per timed epoch of the loop overhead of model2 "
                                     "at 64 px (batch --cache_batch_size).", lower_bound=1)
    loop_epochs: int = setting(2, "Timed epochs (after a warm-up one) of each loop-overhead fit; "
                               "--repeats fits of each kind, alternating.", lower_bound=1)
    assignment_pages: int = setting(320, "Pages (of the generated ones, spread over the classes; "
                                    "a fifth for val) of the assignment's models 1 and 2.",
                                    lower_bound=10)
    assignment_model3_pages: int = setting(96, "Pages of the assignment's model3 runs.",
                                           lower_bound=10)
    assignment_image_size: int = setting(128, "Image size of the assignment (model1 needs >= "
                                         "128).", lower_bound=128)
    jit_compile: str = setting("auto", "XLA for the training-step measurement, as trainer.main's "
                               "--jit_compile (auto: on with a GPU).", choices=("auto", "on", "off"))
