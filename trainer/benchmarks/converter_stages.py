"""The converter: its two per-page stages timed alone, and whole conversions timed in a helper
process (convert_driver) with 1 worker and with all cores."""
import io
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def page_stages(labels_txt, images_dir, image_size, pages, repeats):
    """Milliseconds per page of the converter's two stages (tfrecords_tool.decode: gray_page on
    the file bytes, then resize) and of the other resize filters it was chosen among."""
    from PIL import Image
    import tifffile
    from tfrecords_tool import decode

    with open(labels_txt) as f:
        paths = [os.path.join(images_dir, line.split()[0]) for line in f if line.strip()][:pages]
    files = []
    for path in paths:
        with open(path, "rb") as f:
            files.append(f.read())
    grays = [decode.gray_page(data)[0] for data in files]
    size = (image_size, image_size)
    filters = {
        "converter": lambda gray: decode.resize(gray, image_size),
        "bilinear": lambda gray: np.asarray(gray.resize(size, Image.BILINEAR)),
        "box": lambda gray: np.asarray(gray.resize(size, Image.BOX)),
        "nearest_reference": lambda gray: np.asarray(gray.resize(size, Image.NEAREST)),
    }

    def best_ms(function, items):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for item in items:
                function(item)
            times.append(time.perf_counter() - start)
        return 1000 * min(times) / len(items)

    def pillow_alone(data):
        return Image.open(io.BytesIO(data)).convert("L")

    def tifffile_alone(data):
        return tifffile.imread(io.BytesIO(data))

    # tifffile reads no CCITT (Group 4) pages: the decoder comparison uses the others.
    not_fax = [data for data, gray in zip(files, grays)
               if Image.open(io.BytesIO(data)).mode != "1"]
    bilinear = [filters["bilinear"](gray) for gray in grays]
    return {
        "pages": len(files), "image_size": image_size, "reducing_gap": decode.REDUCING_GAP,
        "gray_page_ms": best_ms(decode.gray_page, files),
        # Pillow alone on the same pages: gray_page_ms minus this is the converter's own cost
        # per page (reading the layout, capturing decoder messages).
        "pillow_alone_ms": best_ms(pillow_alone, files),
        "decoders_not_fax_ms": {"pages": len(not_fax), "pillow": best_ms(pillow_alone, not_fax),
                                "tifffile": best_ms(tifffile_alone, not_fax)},
        "resize_ms": {name: best_ms(function, grays) for name, function in filters.items()},
        "mean_abs_diff_to_bilinear": {
            name: float(np.mean([np.abs(function(gray).astype(int) - want).mean()
                                 for gray, want in zip(grays, bilinear)]))
            for name, function in filters.items() if name != "bilinear"},
    }


class Converter:
    """The converter in a helper process (`python -m trainer.benchmarks.convert_driver`, whose
    docstring says why a process of its own): 1 worker (in-process) or `workers` processes."""

    def __init__(self, log_path):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trainer.benchmarks.convert_driver"], env=env, cwd=REPO_ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self._reply()

    def _reply(self):
        line = self.process.stdout.readline()
        if not line:
            self.log.flush()
            with open(self.log.name) as f:
                raise RuntimeError(f"the converter helper stopped:\n{f.read()[-3000:]}")
        return json.loads(line)

    def run(self, labels_file, images_dir, output_dir, workers, image_size, image_format,
            split="train"):
        """Converts; returns pages/s (pages read / seconds of the conversion) and the manifest's
        counts. The job's keys are ConvertConfig's fields (the converter's flag names)."""
        job = {"labels": labels_file, "images_dir": images_dir, "output_dir": output_dir,
               "workers": workers, "image_size": image_size, "image_format": image_format,
               "split": split}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        seconds, cpu_s = reply["seconds"], reply["cpu_s"]
        from trainer import data
        manifest = data.read_manifest(output_dir, split)
        pages = manifest["num_records"] + len(manifest["skipped"])
        return {"pages": pages, "records": manifest["num_records"],
                "skipped": len(manifest["skipped"]), "shards": len(manifest["shards"]),
                "seconds": seconds, "img_s": pages / seconds, "workers": workers,
                "image_size": image_size, "image_format": image_format,
                "jpeg_quality": manifest["jpeg_quality"],
                # CPU time of the converter and its workers: how many cores it actually got
                "cpu_s": cpu_s, "cores_used": cpu_s / seconds if cpu_s else None,
                "img_per_cpu_s": pages / cpu_s if cpu_s else None}

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def best_conversion(runs):
    return max(runs, key=lambda run: run["img_s"])


def scaling_runs(converter, labels_file, images_dir, output_prefix, workers, image_size,
                 repeats, budget_s):
    """{"1": runs, "all": runs}: pairs of raw conversions with 1 and `workers` workers,
    alternating (a busy moment hits both settings), `repeats` pairs or more: while the fastest
    multi-worker run got under 90% of its cores (other processes held them, so the scaling
    measured would be theirs) and `budget_s` from the first conversion are not spent."""
    runs = {"1": [], "all": []}
    deadline = time.perf_counter() + budget_s
    while True:
        for name, count in (("1", 1), ("all", workers)):
            runs[name].append(converter.run(labels_file, images_dir, f"{output_prefix}-{name}",
                                            count, image_size, "raw"))
        if len(runs["1"]) < repeats:
            continue
        got = best_conversion(runs["all"])["cores_used"]
        if got is None or got >= 0.9 * workers or time.perf_counter() > deadline:
            return runs


def subset_labels(labels_txt, path, count):
    """The first `count` lines of a label file, written to `path`; returns how many."""
    with open(labels_txt) as f:
        lines = [line for line in f if line.strip()][:count]
    with open(path, "w") as f:
        f.writelines(lines)
    return len(lines)


def record_bytes(files, num_records):
    """Mean bytes per record of the shards `files`."""
    return round(sum(os.path.getsize(f) for f in files) / max(num_records, 1), 1)
