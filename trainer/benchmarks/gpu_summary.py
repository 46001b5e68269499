"""One JSON from the bench runs of scripts/gpu_check.sh: a row per (strategy, XLA, model) with
img/s fed by the pipeline and from a batch in memory, GPU utilisation and how input-bound it is.

    python -m trainer.benchmarks.gpu_summary run1.json run2.json ... > gpu_check.json
"""
import json
import sys


def summary(results):
    """{"machine": the first run's, "runs": [row, ...]} from bench result dicts."""
    rows = []
    for result in results:
        settings = result["settings"]
        for model_name, measured in result["training"].items():
            rows.append({
                "model": model_name, "strategy": settings["strategy"],
                "replicas": measured["replicas"], "policy": measured["policy"],
                "jit_compile": measured["jit_compile"], "image_size": measured["image_size"],
                "global_batch": measured["batch_size"],
                "img_s_pipeline": round(measured["img_s_pipeline"], 1),
                "img_s_in_memory": round(measured["img_s_in_memory"], 1),
                "gpu_utilization_pipeline": measured["gpu_utilization_pipeline"],
                "gpu_utilization_in_memory": measured["gpu_utilization_in_memory"],
                # 1.0: the pipeline feeds every step as fast as a batch already in memory
                "pipeline_vs_in_memory": round(measured["pipeline_vs_in_memory"], 3),
                "input_bound": measured["input_bound"],
            })
    return {"machine": results[0]["machine"] if results else {}, "runs": rows}


def main(paths):
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    json.dump(summary(results), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
