"""A benchmark result (run.run's dict) as the table `python -m trainer.bench` prints."""


def _cores(used):
    return f" (got {used:.2f} cores)" if used else ""


def table(result):
    rows = _input_rows(result) if "seed_loader_img_s" in result else []
    for key, measured in result.get("loop", {}).items():
        rows.append((f"loop_overhead_{key}", measured["overhead"],
                     f"{measured['model']}{' cached head' if measured['cached_head'] else ''}: "
                     f"bare {measured['bare_steps_s']:,.1f} vs {measured['product_steps_s']:,.1f} "
                     f"steps/s (steps_per_execution {measured['steps_per_execution']})"))
    if "load" in result:
        measured = result["load"]
        rows.append(("model_load_speedup", measured["speedup"],
                     f"{measured['model']} .keras ({measured['file_mb']} MB): keras "
                     f"{measured['keras_s']:.2f} s vs {measured['product_s']:.2f} s"))
    lines = [f"{'metric':<24}{'value':>14}  note"]
    lines += [f"{name:<24}{value:>14,.2f}  {note}" for name, value, note in rows]
    lines.append("")
    lines.append(f"{'target':<28}{'value':>10}{'target':>10}  met  (docs/benchmarks.md)")
    for name, t in result["targets"].items():
        bound = f"{'<=' if t.get('at_most') else ''}{t['target']:,.2f}"
        lines.append(f"{name:<28}{t['value']:>10,.2f}{bound:>10}  "
                     f"{'yes' if t['met'] else 'NO'} ({t['margin']:.2f}x of target)")
    machine = result["machine"]
    lines.append("")
    capacity = machine.get("parallel_capacity")
    lines.append(f"machine: {machine['cpu_cores']} cores ({machine['cpu_model']}), TF "
                 f"{machine['tensorflow']}, GPU: {'yes' if machine['gpu'] else 'no'}, parallel "
                 f"capacity {capacity}, load {machine['loadavg_before'][0]:.2f} "
                 f"-> {machine['loadavg_after'][0]:.2f}")
    return "\n".join(lines)


def _input_rows(result):
    rows = [
        ("seed_loader_img_s", result["seed_loader_img_s"], "reference ImageDataGenerator"),
        ("gray_page_ms", result["page_stages"]["gray_page_ms"], "converter: decode to gray, per page"),
        ("resize_ms", result["resize_ms"], f"converter: resize (reducing_gap="
                                           f"{result['page_stages']['reducing_gap']}), per page"),
        ("resize_ms_bilinear", result["resize_ms_bilinear"], "plain bilinear, per page"),
        ("convert_img_s_1", result["convert_img_s_1"],
         f"converter, 1 worker{_cores(result['convert_cores_used']['1'])}"),
        ("convert_img_s_all", result["convert_img_s_all"],
         f"converter, {result['settings']['workers']} workers"
         f"{_cores(result['convert_cores_used']['all'])}"),
        ("convert_scaling", result["convert_scaling"], ""),
        ("convert_img_s_png", result["convert_img_s_png"], "converter, png"),
        ("convert_img_s_jpeg", result["convert_img_s_jpeg"], "converter, jpeg"),
        ("pipeline_img_s", result["pipeline_img_s"], "tf.data, raw records"),
        ("pipeline_img_s_png", result["pipeline_img_s_png"], "tf.data, png records"),
        ("pipeline_img_s_jpeg", result["pipeline_img_s_jpeg"], "tf.data, jpeg records"),
        ("pipeline_img_s_augment", result["pipeline_img_s_augment"], "same pipeline (--augment)"),
        ("pipeline_vs_seed", result["pipeline_vs_seed"], ""),
        ("augment_cpu_img_s", result["augment_cpu_img_s"],
         f"{result['augment_cpu']['level']} augmentation on this CPU"),
        ("bytes_per_record_raw", result["bytes_per_record_raw"], ""),
        ("bytes_per_record_png", result["bytes_per_record_png"], ""),
        ("bytes_per_record_jpeg", result["bytes_per_record_jpeg"],
         f"quality {result['convert']['jpeg']['jpeg_quality']}"),
        ("uncached_epoch_s", result["uncached_epoch_s"], ""),
        ("cached_epoch_s", result["cached_epoch_s"], ""),
        ("cached_epoch_speedup", result["cached_epoch_speedup"], ""),
    ]
    for model_name, measured in result["training"].items():
        rows.append((f"train_img_s_{model_name}", measured["img_s_pipeline"],
                     f"fit on the pipeline; in memory {measured['img_s_in_memory']:,.1f}: input-bound "
                     f"{'yes' if measured['input_bound'] else 'no'}, {measured['policy']}"))
    return rows
