"""The built-in sample generator: determinism, TIFF encodings, label files, separable layouts."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfrecords_tool import sample
from tfrecords_tool.classes import NUM_CLASSES, RVL_CDIP_CLASSES

REPO = Path(__file__).resolve().parents[1]
PAGES_PER_CLASS = 6  # as in the conftest `sample_dir` fixture


def _read_rows(path, sep):
    with open(path) as f:
        lines = f.read().splitlines()
    return [tuple(line.split(sep)) for line in lines]


def _small(pixels, side=32):
    """Downscaled, standardised page: the feature of the nearest-centroid check."""
    a = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR), np.float32)
    a = a.ravel()
    return (a - a.mean()) / (a.std() + 1e-6)


def _first_frame(path):
    with Image.open(path) as im:
        im.seek(0)
        return np.asarray(im.convert("L"))


# -- render_page ---------------------------------------------------------------------------

@pytest.mark.parametrize("class_id", range(NUM_CLASSES))
def test_render_page_shape_and_content(class_id):
    page = sample.render_page(class_id, np.random.default_rng([5, class_id]), max_side=300)
    assert page.dtype == np.uint8 and page.ndim == 2
    assert max(page.shape) == 300 and min(page.shape) >= 200
    if class_id != RVL_CDIP_CLASSES.index("presentation"):
        assert page.shape[0] > page.shape[1]  # portrait
    assert page.std() > 10  # not a blank page
    assert np.percentile(page, 90) > 150  # mostly light paper, dark marks


def test_render_page_depends_only_on_rng():
    a = sample.render_page(3, np.random.default_rng(11), max_side=250)
    b = sample.render_page(3, np.random.default_rng(11), max_side=250)
    c = sample.render_page(3, np.random.default_rng(12), max_side=250)
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_render_page_rejects_bad_arguments():
    with pytest.raises(ValueError):
        sample.render_page(16, np.random.default_rng(0))
    with pytest.raises(ValueError):
        sample.render_page(0, np.random.default_rng(0), max_side=8)


# -- TIFF encodings --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page():
    return sample.render_page(11, np.random.default_rng(7), max_side=300)


@pytest.mark.parametrize("encoding", sample.ALL_ENCODINGS)
def test_write_tiff_round_trip(tmp_path, page, encoding):
    path = tmp_path / f"{encoding}.tif"
    second = sample.render_page(11, np.random.default_rng(8), max_side=300)
    sample.write_tiff(path, page, encoding, second_page=second)
    raw = path.read_bytes()
    assert raw[:4] in (b"II*\0", b"MM\0*")
    with Image.open(path) as im:
        assert im.format == "TIFF"
        assert im.size == (page.shape[1], page.shape[0])
        assert getattr(im, "n_frames", 1) == (2 if encoding == "multipage" else 1)
        compression = im.info["compression"]
        mode = im.mode
        tags = dict(im.tag_v2)
        pixels = np.asarray(im)
    diff = np.abs(pixels.astype(np.int32) - page.astype(np.int32)) if pixels.ndim == 2 else None
    if encoding in ("lzw", "packbits", "raw", "multipage", "tiled", "bigendian"):
        expected = {"packbits": "packbits", "raw": "raw"}.get(encoding, "tiff_lzw")
        assert (compression, mode, tags[258]) == (expected, "L", (8,))
        assert np.array_equal(pixels, page)
    if encoding == "jpeg":
        assert (compression, mode) == ("jpeg", "L")
        assert diff.mean() < 3 and np.percentile(diff, 99) < 40
    elif encoding == "group4":
        assert (compression, mode, tags[258]) == ("group4", "1", (1,))
        assert np.array_equal(pixels, page >= sample.GROUP4_THRESHOLD)
    elif encoding == "multipage":
        with Image.open(path) as im:
            im.seek(1)
            frame2 = np.asarray(im.convert("L"))
        assert np.array_equal(frame2, second) and not np.array_equal(frame2, page)
    elif encoding == "rgb":
        assert (compression, mode, tags[277]) == ("tiff_lzw", "RGB", 3)
        gray = np.asarray(Image.fromarray(pixels, "RGB").convert("L")).astype(np.int32)
        assert np.abs(gray - page).max() <= 8
    elif encoding == "16bit":
        assert (compression, mode, tags[258]) == ("tiff_lzw", "I;16", (16,))
        assert pixels.dtype == np.uint16
        assert np.array_equal(pixels, page.astype(np.uint16) * 257)
    elif encoding == "tiled":
        assert tags[322] == tags[323] == sample.TILE_SIZE
        assert 324 in tags and 273 not in tags  # tile offsets, no strips
        assert raw[:2] == b"II"
    elif encoding == "bigendian":
        assert raw[:2] == b"MM"
    if encoding != "bigendian":
        assert raw[:2] == b"II"


def test_write_tiff_is_deterministic(tmp_path, page):
    for encoding in sample.ALL_ENCODINGS:
        a, b = tmp_path / f"a_{encoding}.tif", tmp_path / f"b_{encoding}.tif"
        sample.write_tiff(a, page, encoding)
        sample.write_tiff(b, page, encoding)
        assert a.read_bytes() == b.read_bytes(), encoding


def test_write_tiff_rejects_bad_input(tmp_path, page):
    with pytest.raises(ValueError):
        sample.write_tiff(tmp_path / "x.tif", page, "webp")
    with pytest.raises(ValueError):
        sample.write_tiff(tmp_path / "x.tif", page.astype(np.float32), "lzw")
    with pytest.raises(ValueError):
        sample.write_tiff(tmp_path / "x.tif", np.stack([page] * 3, -1), "lzw")


# -- the generated sample ----------------------------------------------------------------------

def test_sample_label_files(sample_dir):
    txt = _read_rows(sample_dir / "labels.txt", " ")
    with open(sample_dir / "labels.csv") as f:
        header = f.readline()
    csv = _read_rows(sample_dir / "labels.csv", ",")
    assert header == "path,label\n"
    assert csv[1:] == txt  # same rows, same order; labels.txt has no header
    assert all(len(row) == 2 for row in txt)
    assert len(txt) == NUM_CLASSES * PAGES_PER_CLASS
    assert len({p for p, _ in txt}) == len(txt)
    labels = [int(lab) for _, lab in txt]
    assert sorted(set(labels)) == list(range(NUM_CLASSES))
    assert all(labels.count(c) == PAGES_PER_CLASS for c in range(NUM_CLASSES))
    for path, lab in txt:
        assert not os.path.isabs(path) and path.endswith(".tif")
        assert (sample_dir / "images" / path).is_file()
        assert path.split("/")[0] == RVL_CDIP_CLASSES[int(lab)].replace(" ", "_")
    in_order = sorted(txt, key=lambda r: (int(r[1]), r[0]))
    assert txt != in_order  # shuffled


def test_sample_encodings(sample_dir):
    multipage = []
    for c in range(NUM_CLASSES):
        folder = sample.class_folder(c)
        for i in range(PAGES_PER_CLASS):
            path = sample_dir / "images" / folder / f"{folder}_{i:04d}.tif"
            with Image.open(path) as im:
                frames = getattr(im, "n_frames", 1)
                compression = im.info["compression"]
            if frames == 2:
                multipage.append(path)
                assert compression == "tiff_lzw"
                continue
            expected = sample.ENCODINGS[(c * PAGES_PER_CLASS + i) % len(sample.ENCODINGS)]
            assert compression == {"lzw": "tiff_lzw"}.get(expected, expected), path
    assert len(multipage) == 1


def test_generate_is_deterministic(tmp_path):
    info_a = sample.generate(tmp_path / "a", 2, seed=3, max_side=200)
    sample.generate(tmp_path / "b", 2, seed=3, max_side=200)
    sample.generate(tmp_path / "c", 2, seed=4, max_side=200)
    assert info_a["num_pages"] == 32 and info_a["pages_per_class"] == 2
    assert sum(info_a["encoding_counts"].values()) == 32
    assert info_a["encoding_counts"]["multipage"] == 1
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                     if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
                     if p.is_file())
    assert files_a == files_b and len(files_a) == 32 + 2
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # another seed: other pages
    differ = 0
    for rel in info_a["encodings"]:
        a = _first_frame(tmp_path / "a" / "images" / rel)
        c = _first_frame(tmp_path / "c" / "images" / rel)
        differ += a.shape != c.shape or not np.array_equal(a, c)
    assert differ == 32


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        sample.generate(tmp_path, 0)
    with pytest.raises(ValueError):
        sample.generate(tmp_path, 1, encodings=("lzw", "png"))


def test_layouts_separate_classes(sample_dir):
    """A nearest-centroid classifier on 32x32 pages of one seed labels another seed's pages far
    above chance (1/16): the classes have distinct coarse layouts, which the trainer relies on."""
    rows = _read_rows(sample_dir / "labels.txt", " ")
    feats = np.stack([_small(_first_frame(sample_dir / "images" / p)) for p, _ in rows])
    labels = np.array([int(lab) for _, lab in rows])
    centroids = np.stack([feats[labels == c].mean(0) for c in range(NUM_CLASSES)])
    test_x, test_y = [], []
    for c in range(NUM_CLASSES):
        for i in range(4):
            test_x.append(_small(sample.render_page(c, np.random.default_rng([1, c, i]), 400)))
            test_y.append(c)
    test_x, test_y = np.stack(test_x), np.array(test_y)
    dist = ((test_x[:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = float((dist.argmin(1) == test_y).mean())
    assert accuracy >= 0.45, accuracy


# -- CLI -----------------------------------------------------------------------------------------

def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.run([sys.executable, "-m", "tfrecords_tool.sample", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    proc = _run_cli(f"--output_dir={out}", "--pages_per_class=1", "--max_side=150", "--seed=2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 16 pages")
    assert len(_read_rows(out / "labels.txt", " ")) == 16
    assert len(_read_rows(out / "labels.csv", ",")) == 17


def test_cli_requires_output_dir():
    """A usage error: one line naming the tool and exit status 2 (tfrecords_tool.errors)."""
    proc = _run_cli("--pages_per_class=1")
    assert proc.returncode != 0
    assert "output_dir" in proc.stderr
    assert proc.returncode == 2
    assert "error: --output_dir is required" in proc.stderr.splitlines()
