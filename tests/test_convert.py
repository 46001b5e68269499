"""The converter: page decoding, bad pages, splits and shards, tasks, resumption and the CLI."""
import collections
import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

from tfrecords_tool import conversion
from tfrecords_tool import decode
from tfrecords_tool import errors
from tfrecords_tool import filesystems
from tfrecords_tool import records
from tfrecords_tool import page_pool
from tfrecords_tool import sample
from tfrecords_tool import split
from tfrecords_tool.classes import NUM_CLASSES
from tfrecords_tool.labels import LabelFileError, Page

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
# Largest pixel difference to the source page resized alike: JPEG is lossy and the RGB variant
# has a tinted paper; everything else decodes exactly.
TOLERANCE = {"jpeg": 4, "rgb": 5}


@pytest.fixture(scope="module")
def page():
    return sample.render_page(4, np.random.default_rng(0), max_side=300)


def _resized(pixels, size):
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR,
                                                     reducing_gap=decode.REDUCING_GAP))


@pytest.mark.parametrize("encoding", sample.ALL_ENCODINGS)
def test_every_tiff_variant_decodes(tmp_path, page, encoding):
    path = tmp_path / "page.tif"
    sample.write_tiff(path, page, encoding)
    source = page
    if encoding == "group4":
        source = np.where(page >= sample.GROUP4_THRESHOLD, 255, 0).astype(np.uint8)
    pixels = decode.load_page(str(path), 64)
    assert pixels.dtype == np.uint8 and pixels.shape == (64, 64)
    assert np.abs(pixels.astype(int) - _resized(source, 64)).max() <= TOLERANCE.get(encoding, 0)
    np.testing.assert_array_equal(decode.load_page(path.read_bytes(), 64), pixels)


def test_palette_and_full_range_16_bit(page):
    palette = io.BytesIO()
    Image.fromarray(page).convert("P").save(palette, "TIFF")
    pixels = decode.load_page(palette.getvalue(), 48)
    assert np.abs(pixels.astype(int) - _resized(page, 48)).max() <= 1
    ramp = io.BytesIO()
    full_range = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (8, 1))
    Image.fromarray(full_range).save(ramp, "TIFF")
    row = decode.load_page(ramp.getvalue(), 256)[0]
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row.astype(int)) >= 0)


def _lzw_directory_first(pixels):
    """An LZW TIFF with its directory before the pixel data, as many scanners write them."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "TIFF", compression="tiff_lzw", strip_size=pixels.size)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        start, length = image.tag_v2[273][0], image.tag_v2[279][0]
    strip = buffer.getvalue()[start:start + length]
    height, width = pixels.shape
    tags = [(256, width), (257, height), (258, 8), (259, 5), (262, 1), (273, 8 + 2 + 9 * 12 + 4),
            (277, 1), (278, height), (279, len(strip))]
    directory = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", tag, 4, 1, value) for tag, value in tags) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + directory + strip


def test_damaged_pages_raise(tmp_path, page):
    whole = _lzw_directory_first(page)
    np.testing.assert_array_equal(decode.load_page(whole, SIZE), _resized(page, SIZE))
    sample.write_tiff(tmp_path / "lzw.tif", page, "lzw")
    sample.write_tiff(tmp_path / "raw.tif", page, "raw")
    png = io.BytesIO()
    Image.fromarray(page).save(png, "PNG")
    strip = len(whole) - len(page.tobytes()) // 2  # inside the LZW strip
    noise = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    cases = {
        "truncated strip data .the file has": whole[:len(whole) * 6 // 10],
        "damaged TIFF header or directory": (tmp_path / "lzw.tif").read_bytes()[:3000],
        "truncated strip data": (tmp_path / "raw.tif").read_bytes()[:-100],
        "damaged image data: Using code not yet in table": whole[:strip] + noise + whole[strip + 400:],
        "empty file": b"",
        "not a TIFF file": b"path label\n",
    }
    for reason, data in cases.items():
        with pytest.raises(decode.PageError, match=reason):
            decode.load_page(data, SIZE)
    with pytest.raises(decode.PageError, match="not a TIFF file"):
        decode.load_page(png.getvalue(), SIZE)
    with pytest.raises(decode.PageError, match="file not found"):
        decode.load_page(str(tmp_path / "missing.tif"), SIZE)


def _pages(num_per_class, classes=NUM_CLASSES):
    return [Page(f"{label}/{i}.tif", label) for label in range(classes)
            for i in range(num_per_class[label])]


def test_stratified_split():
    pages = _pages([3000] * NUM_CLASSES)  # the reference's 48,000-page subset
    train, val = split.stratified_split(pages, 0.2, seed=0)
    assert len(val) == 9600
    assert collections.Counter(p.label for p in val) == {c: 600 for c in range(NUM_CLASSES)}
    assert sorted(train + val) == sorted(pages)
    uneven = _pages([7, 13, 1, 0, 25, 3, 8, 11, 2, 9, 5, 30, 4, 6, 17, 10])
    train, val = split.stratified_split(uneven, 0.3, seed=0)
    per_class = collections.Counter(p.label for p in val)
    for label, n in collections.Counter(p.label for p in uneven).items():
        assert abs(per_class[label] - round(0.3 * n)) <= 1
    assert len(val) == round(0.3 * len(uneven)) and not set(train) & set(val)
    assert split.stratified_split(uneven, 0.3, seed=0) == (train, val)
    assert split.stratified_split(uneven, 0.3, seed=1) != (train, val)


def test_shards_balanced_and_mixed():
    pages = _pages([60] * NUM_CLASSES)  # sorted by class: shuffling must mix them
    shards = split.assign_shards(pages, 7, seed=0)
    assert {len(s) for s in shards} <= {len(pages) // 7, len(pages) // 7 + 1}
    assert sorted(p for s in shards for p in s) == sorted(pages)
    assert all(len({p.label for p in s}) == NUM_CLASSES for s in shards)
    assert split.assign_shards(pages, 7, seed=0) == shards != split.assign_shards(pages, 7, seed=1)
    tasks = [split.for_task(list(range(10)), i, 3) for i in range(3)]
    assert sorted(sum(tasks, [])) == list(range(10)) and tasks[2] == [2, 5, 8]
    sizes = (0, 2000, 2001, 40_000, 320_000)
    assert [split.default_num_shards(n) for n in sizes] == [1, 1, 2, 20, 160]


@pytest.mark.parametrize("environ, flags, expected", [
    ({}, (None, None), (0, 1)),
    ({"BATCH_TASK_INDEX": "2", "BATCH_TASK_COUNT": "4"}, (None, None), (2, 4)),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": "3"}, (None, None), (1, 3)),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "1"}, (None, 2), (1, 2)),
    ({"JOB_COMPLETION_INDEX": "4"}, (None, 5), (4, 5)),
    ({"BATCH_TASK_INDEX": "2", "BATCH_TASK_COUNT": "4"}, (0, 2), (0, 2)),
])
def test_resolve_task(environ, flags, expected):
    assert conversion.resolve_task(*flags, environ) == expected


@pytest.mark.parametrize("environ, flags, message", [
    ({"JOB_COMPLETION_INDEX": "1"}, (None, None), "JOB_COMPLETION_INDEX=1 .* pass --num_tasks"),
    ({}, (None, 3), "needs --task_index"),
    ({"BATCH_TASK_INDEX": "4", "BATCH_TASK_COUNT": "4"}, (None, None), "not below"),
])
def test_resolve_task_errors(environ, flags, message):
    with pytest.raises(conversion.ConvertError, match=message):
        conversion.resolve_task(*flags, environ)


def _convert(sample_dir, output_dir, **settings):
    settings.setdefault("labels", str(sample_dir / "labels.txt"))
    settings.setdefault("workers", 0)  # decoded in this process unless a test asks for workers
    return conversion.convert(output_dir=str(output_dir), images_dir=str(sample_dir / "images"),
                              image_size=SIZE, **settings)


def _files(directory):
    return {path.name: path.read_bytes() for path in sorted(Path(directory).iterdir())}


def _records(path):
    return [records.parse_one(r) for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


def test_convert_round_trip(sample_dir, tmp_path):
    assert _convert(sample_dir, tmp_path, num_shards=4) == [str(tmp_path / "labels-manifest.json")]
    result = json.loads((tmp_path / "labels-manifest.json").read_text())
    assert result["num_records"] == 96 and result["class_counts"] == [6] * NUM_CLASSES
    assert [s["num_records"] for s in result["shards"]] == [24] * 4 and result["skipped"] == []
    assert (result["image_size"], result["image_format"]) == (SIZE, "raw")
    assert result["split"] == "labels"
    listed = dict(line.split(" ") for line in (sample_dir / "labels.txt").read_text().splitlines())
    seen = []
    for shard in result["shards"]:
        shard_records = _records(tmp_path / shard["file"])
        assert len({r[records.LABEL_KEY] for r in shard_records}) >= 8  # classes mixed
        for r in shard_records:
            filename = r[records.FILENAME_KEY].decode()
            assert r[records.LABEL_KEY] == int(listed[filename])
            pixels = np.frombuffer(r[records.RAW_KEY], np.uint8).reshape(SIZE, SIZE)
            source = decode.load_page(str(sample_dir / "images" / filename), SIZE)
            np.testing.assert_array_equal(pixels, source)
            seen.append(filename)
    assert sorted(seen) == sorted(listed)


def test_bad_pages_are_skipped_and_listed(sample_dir, tmp_path, caplog):
    images = tmp_path / "images"
    for folder in ("letter", "memo"):
        shutil.copytree(sample_dir / "images" / folder, images / folder)
    good = sorted(str(p.relative_to(images)) for p in images.glob("*/*.tif"))
    (images / "memo" / "truncated.tif").write_bytes((images / good[0]).read_bytes()[:2000])
    (images / "memo" / "empty.tif").write_bytes(b"")
    (images / "memo" / "text.tif").write_text("not an image\n")
    bad = {"memo/truncated.tif": "damaged", "memo/empty.tif": "empty file",
           "memo/text.tif": "not a TIFF file", "memo/missing.tif": "file not found"}
    label_file = tmp_path / "pages.csv"
    label_file.write_text("path,label\n" + "".join(f"{p},{0 if p.startswith('letter') else 15}\n"
                                                   for p in good + list(bad)))
    with caplog.at_level(logging.WARNING):
        conversion.convert(output_dir=str(tmp_path / "out"), images_dir=str(images),
                           labels=str(label_file), image_size=SIZE, max_bad_fraction=0.5,
                           workers=0)
    result = json.loads((tmp_path / "out" / "pages-manifest.json").read_text())
    assert result["num_records"] == 12
    assert result["class_counts"][0] == result["class_counts"][15] == 6
    assert sorted(s["path"] for s in result["skipped"]) == sorted(bad)
    for skipped in result["skipped"]:
        assert bad[skipped["path"]] in skipped["reason"]
        assert f"skipped {skipped['path']}: {skipped['reason']}" in caplog.text
    stop = "4 of 16 pages could not be read, more than --max_bad_fraction=0.1"
    with pytest.raises(conversion.ConvertError, match=stop):
        conversion.convert(output_dir=str(tmp_path / "strict"), images_dir=str(images),
                           labels=str(label_file), image_size=SIZE, split="strict", workers=0)
    assert not list((tmp_path / "strict").glob("*manifest*"))


def test_malformed_label_lines_are_skipped_and_listed(sample_dir, tmp_path, caplog):
    """A hand-edited list (BOM, a comment, CRLF, a tab, a typo, a label out of range, an
    absolute path): every good line is converted, each bad one named by its line number in
    the log and the manifest."""
    lines = (sample_dir / "labels.txt").read_text().splitlines()
    edited = ["# pages I checked by hand", *lines[:40], lines[40].replace(" ", "\t"),
              "memo/memo_0000.tif x", "letter/letter_0000.tif 16", "/etc/passwd 3",
              "forgotten_label.tif", *lines[41:]]
    label_file = tmp_path / "edited.txt"
    label_file.write_bytes(("\ufeff" + "\r\n".join(edited) + "\r\n").encode())
    with caplog.at_level(logging.WARNING):
        _convert(sample_dir, tmp_path / "out", labels=str(label_file))
    result = json.loads((tmp_path / "out" / "edited-manifest.json").read_text())
    assert result["num_records"] == 96 and result["skipped"] == []
    expected = {1: "label 'hand' is not an integer", 43: "label 'x' is not an integer",
                44: "label 16 is outside 0..15", 45: "absolute path '/etc/passwd'",
                46: "expected `path label`"}
    listed = {entry["line"]: entry["problem"] for entry in result["skipped_label_lines"]}
    assert sorted(listed) == sorted(expected)
    for line, problem in expected.items():
        assert problem in listed[line]
        assert f"{label_file}:{line}: {listed[line]}; line skipped" in caplog.text
    clean = json.loads(_convert(sample_dir, tmp_path / "clean") and
                       (tmp_path / "clean" / "labels-manifest.json").read_text())
    assert clean["skipped_label_lines"] == []


def test_val_fraction_and_folders(sample_dir, tmp_path):
    _convert(sample_dir, tmp_path / "split", val_fraction=0.2, seed=1)
    train = json.loads((tmp_path / "split" / "train-manifest.json").read_text())
    val = json.loads((tmp_path / "split" / "val-manifest.json").read_text())
    assert (train["num_records"], val["num_records"]) == (77, 19)
    assert all(c in (1, 2) for c in val["class_counts"])
    assert train["val_fraction"] == val["val_fraction"] == 0.2
    folders = [sample.class_folder(c) for c in range(NUM_CLASSES)][::-1]
    _convert(sample_dir, tmp_path / "folders", labels=None, class_names=folders)
    result = json.loads((tmp_path / "folders" / "images-manifest.json").read_text())
    assert result["class_names"] == folders and result["num_records"] == 96
    first = _records(tmp_path / "folders" / result["shards"][0]["file"])[0]
    assert folders[first[records.LABEL_KEY]] == first[records.FILENAME_KEY].decode().split("/")[0]


def test_user_errors(sample_dir, tmp_path):
    with pytest.raises(conversion.ConvertError, match="--split names the one split"):
        _convert(sample_dir, tmp_path, val_fraction=0.2, split="x")
    with pytest.raises(conversion.ConvertError, match="leaves a split of 96 pages empty"):
        _convert(sample_dir, tmp_path, val_fraction=0.001)
    with pytest.raises(conversion.ConvertError, match="none of 20 sampled pages exists .*images_dir"):
        conversion.convert(output_dir=str(tmp_path), images_dir=str(tmp_path / "nowhere"),
                           labels=str(sample_dir / "labels.txt"), workers=0)
    assert not list(tmp_path.iterdir())


def test_tasks_and_reruns_match_single_run(sample_dir, tmp_path):
    _convert(sample_dir, tmp_path / "single", num_shards=5)
    single = _files(tmp_path / "single")
    for task in range(3):
        written = _convert(sample_dir, tmp_path / "tasks", num_shards=5, task_index=task,
                           num_tasks=3)
        assert bool(written) == (task == 2)  # the task that completes the split writes its manifest
    assert _files(tmp_path / "tasks") == single
    assert _convert(sample_dir, tmp_path / "tasks", num_shards=5, merge_only=True)
    assert _files(tmp_path / "tasks") == single
    with pytest.raises(conversion.ConvertError, match="5 of 5 shards are not complete"):
        _convert(sample_dir, tmp_path / "none", num_shards=5, merge_only=True)

    shards = sorted((tmp_path / "single").glob("*.tfrecord"))
    mtimes = [p.stat().st_mtime_ns for p in shards]
    shards[3].write_bytes(shards[3].read_bytes()[:-10])  # a shard damaged after the fact
    _convert(sample_dir, tmp_path / "single", num_shards=5)
    assert _files(tmp_path / "single") == single
    rewritten = [p.stat().st_mtime_ns != m for p, m in zip(shards, mtimes)]
    assert rewritten == [False, False, False, True, False]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tfrecords_tool.convert", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_killed_converter_resumes(sample_dir, tmp_path):
    args = [f"--labels={sample_dir}/labels.txt", f"--images_dir={sample_dir}/images",
            f"--image_size={SIZE}", "--num_shards=96", "--workers=1",
            f"--output_dir={tmp_path / 'out'}"]
    process = subprocess.Popen([sys.executable, "-m", "tfrecords_tool.convert", *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out").glob("*.tfrecord")) and time.monotonic() < deadline:
        time.sleep(0.002)
    process.kill()
    process.wait()
    assert not (tmp_path / "out" / "labels-manifest.json").exists(), "ended before the kill"
    assert 0 < len(list((tmp_path / "out").glob("*.tfrecord"))) < 96
    # The rerun (what is under test is that it resumes, not how it is launched): in-process.
    rerun = _convert(sample_dir, tmp_path / "out", num_shards=96, workers=1)
    assert rerun == [str(tmp_path / "out" / "labels-manifest.json")]
    _convert(sample_dir, tmp_path / "reference", num_shards=96)
    assert _files(tmp_path / "out") == _files(tmp_path / "reference")


def test_cli_workers_png_and_errors(sample_dir, tmp_path):
    ok = _cli(f"--labels={sample_dir}/labels.csv", f"--images_dir={sample_dir}/images",
              f"--image_size={SIZE}", "--num_shards=3", "--workers=2", "--image_format=png",
              f"--output_dir={tmp_path / 'cli'}")
    assert ok.returncode == 0, ok.stderr
    assert "96 records, 0 skipped" in ok.stderr and "pages/s" in ok.stderr
    _convert(sample_dir, tmp_path / "inline", labels=str(sample_dir / "labels.csv"),
             num_shards=3, image_format="png")
    assert _files(tmp_path / "cli") == _files(tmp_path / "inline")

    start = time.monotonic()
    failed = _cli(f"--labels={sample_dir}/labels.txt", f"--images_dir={tmp_path}/wrong",
                  f"--output_dir={tmp_path / 'failed'}")
    assert failed.returncode == errors.NOTHING_DONE == 2 and time.monotonic() - start < 60
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: none of 20 sampled pages exists")
    assert "Traceback" not in failed.stderr and not list((tmp_path / "failed").glob("*.tfrecord"))


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "file.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with filesystems.atomic_write(str(target)) as temporary:
            Path(temporary).write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with filesystems.atomic_write(str(target), str(tmp_path / ".tmp-file.json"),
                                  local=True) as temporary:
        assert temporary == str(tmp_path / ".tmp-file.json")  # local: beside the target
        Path(temporary).write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]


def test_config_and_keyword_settings(sample_dir, tmp_path):
    """convert(config) and convert(**settings) are the same call; keywords override a config."""
    defaults = conversion.ConvertConfig()
    assert (defaults.image_size, defaults.image_format, defaults.seed, defaults.workers,
            defaults.max_bad_fraction, defaults.page_timeout) == (224, "raw", 0, os.cpu_count(),
                                                                  0.1, 60.0)
    config = conversion.ConvertConfig(labels=str(sample_dir / "labels.txt"),
                                      images_dir=str(sample_dir / "images"),
                                      output_dir=str(tmp_path / "config"), image_size=SIZE,
                                      num_shards=2, workers=0)
    assert conversion.convert(config) == [str(tmp_path / "config" / "labels-manifest.json")]
    assert conversion.convert(config, output_dir=str(tmp_path / "keywords"), image_size=SIZE)
    _convert(sample_dir, tmp_path / "helper", num_shards=2)
    assert _files(tmp_path / "config") == _files(tmp_path / "keywords") == _files(
        tmp_path / "helper")
    with pytest.raises(errors.UsageError, match="--images_dir and --output_dir must be set"):
        conversion.convert(labels=str(sample_dir / "labels.txt"))
    with pytest.raises(TypeError, match="labels_file"):
        conversion.convert(config, labels_file="x.txt")


def test_errors_are_tool_errors_that_exit_2():
    for error in (conversion.ConvertError, LabelFileError, page_pool.WorkersKeepDying):
        assert issubclass(error, errors.ToolError) and error.exit_code == errors.NOTHING_DONE
