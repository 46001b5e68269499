"""Label files (official and CSV) and folder-per-class discovery."""
import collections
import logging
from pathlib import Path

import pytest

from tfrecords_tool import labels
from tfrecords_tool.classes import NUM_CLASSES, RVL_CDIP_CLASSES
from tfrecords_tool.labels import LabelFileError, Page

OFFICIAL_VAL = Path(__file__).resolve().parents[2] / "shared/rvl-cdip/val.txt"
EXPECTED = [Page("a/x.tif", 0), Page("b/y z.tif", 15), Page("c.tif", 3)]


def _write(tmp_path, text, name="labels.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return str(path)


@pytest.mark.parametrize("text", [
    "a/x.tif 0\nb/y z.tif 15\nc.tif 3\n",
    "a/x.tif 0\nb/y z.tif 15\nc.tif 3",
    "\na/x.tif 0\n\n\nb/y z.tif 15\nc.tif 3\n\n",
    "a/x.tif 0\r\nb/y z.tif 15\r\nc.tif 3\r\n",
    "path,label\na/x.tif,0\nb/y z.tif,15\nc.tif,3\n",
    "path,label\r\na/x.tif,0\r\n\r\nb/y z.tif,15\r\nc.tif,3",
    "\ufeffid,label,path\n1,0,a/x.tif\n2,15,b/y z.tif\n3,3,c.tif\n",  # BOM, extra column
])
def test_both_formats(tmp_path, text):
    assert labels.read_labels(_write(tmp_path, text)) == (EXPECTED, [])


@pytest.mark.parametrize("text, line, problem", [
    ("a.tif 0\nb.tif\nc.tif 1\n", 2, "expected `path label`"),
    ("a.tif 0\n\nb.tif x\n", 3, "not an integer"),
    ("a.tif 16\n", 1, "outside 0..15"),
    ("a.tif 0\nb.tif -1\n", 2, "outside 0..15"),
    ("path,label\na.tif,1\nb.tif,2,3\n", 3, "expected 2 CSV fields"),
    ("path,label\na.tif,\n", 2, "not an integer"),
    ("path,label\n,4\n", 2, "empty path"),
])
def test_a_malformed_line_is_skipped_with_its_file_and_line_named(tmp_path, caplog, text, line,
                                                                  problem):
    path = _write(tmp_path, text + ("good.tif,7\n" if text.startswith("path,") else "good.tif 7\n"))
    with caplog.at_level(logging.WARNING):
        listed = labels.read_labels(path)
    assert listed.pages[-1] == Page("good.tif", 7)  # the rest is read
    assert [bad.line for bad in listed.bad_lines] == [line] and problem in listed.bad_lines[0].problem
    warnings = [r.getMessage() for r in caplog.records]
    assert any(w.startswith(f"{path}:{line}: ") and problem in w and w.endswith("line skipped")
               for w in warnings), warnings
    assert f"{path}: 1 malformed lines skipped, {len(listed.pages)} pages listed" in warnings


def test_a_file_of_malformed_lines_stops_with_the_first_named(tmp_path):
    not_labels = _write(tmp_path, "".join(f"word{i} another{i}\n" for i in range(30)))
    with pytest.raises(LabelFileError, match=r"no pages listed; all 30 lines are malformed "
                                             r"\(first: line 1: label 'another0' is not an"):
        labels.read_labels(not_labels)
    # 3 of 30 lines bad is at the limit (0.1): read; 4 is above it: stopped
    good = "".join(f"p{i}.tif 1\n" for i in range(27))
    assert len(labels.read_labels(_write(tmp_path, good + "x\ny\nz\n")).pages) == 27
    mostly = _write(tmp_path, good[:-len("p26.tif 1\n")] + "w\nx\ny\nz\n")
    with pytest.raises(LabelFileError, match=r"4 of 30 lines are malformed \(first: line 27: "
                                             r"expected `path label`.*--max_bad_fraction=0.1"):
        labels.read_labels(mostly)
    assert len(labels.read_labels(mostly, max_bad_fraction=0.2).pages) == 26
    # below MIN_LINES_FOR_BAD_FRACTION lines, any good line is used
    assert labels.read_labels(_write(tmp_path, "a b c\nd\nok.tif 2\n")).pages == [Page("ok.tif", 2)]


def test_label_range_follows_num_classes(tmp_path):
    path = _write(tmp_path, "a.tif 2\nb.tif 3\n")
    assert labels.read_labels(path, num_classes=4).pages[1] == Page("b.tif", 3)
    assert labels.read_labels(path, num_classes=3).bad_lines == [
        (2, "label 3 is outside 0..2")]


@pytest.mark.parametrize("bad", ["../x.tif", "a/../../x.tif", "..", "/etc/x.tif", "gs://b/x.tif"])
def test_outside_paths_refused_unless_allowed(tmp_path, bad):
    path = _write(tmp_path, f"ok.tif 1\n{bad} 2\n")
    refused = labels.read_labels(path)
    assert refused.pages == [Page("ok.tif", 1)]
    assert refused.bad_lines[0].line == 2
    assert bad in refused.bad_lines[0].problem and "--allow_outside_paths" in refused.bad_lines[0].problem
    assert labels.read_labels(path, allow_outside=True).pages[1] == Page(bad, 2)


def test_full_path():
    assert labels.full_path("gs://b/images", "a/x.tif") == "gs://b/images/a/x.tif"
    assert labels.full_path("/data/images/", "a/x.tif") == "/data/images/a/x.tif"
    assert labels.full_path("/data/images", "/elsewhere/x.tif") == "/elsewhere/x.tif"
    assert labels.full_path("/data/images", "s3://b/x.tif") == "s3://b/x.tif"


def test_repeated_paths_keep_first_line_and_warn(tmp_path, caplog):
    path = _write(tmp_path, "a.tif 1\nb.tif 2\n./a.tif 3\nb.tif 2\nc.tif 4\nc.tif 4\n")
    with caplog.at_level(logging.WARNING):
        pages = labels.read_labels(path).pages
    assert pages == [Page("a.tif", 1), Page("b.tif", 2), Page("c.tif", 4)]
    conflicts, repeats = [r.getMessage() for r in caplog.records]
    assert "1 paths listed with conflicting labels, the first line's label kept" in conflicts
    assert "./a.tif (line 1: label 1, line 3: label 3; kept 1)" in conflicts
    assert "b.tif" not in conflicts
    assert "2 repeated paths ignored" in repeats
    assert "b.tif (lines 2 and 4)" in repeats and "c.tif (lines 5 and 6)" in repeats


def test_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(LabelFileError, match="no pages"):
        labels.read_labels(_write(tmp_path, "\n\n"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9.tif 1\n".encode("latin-1"))
    with pytest.raises(LabelFileError, match="not UTF-8"):
        labels.read_labels(str(bad))


@pytest.mark.skipif(not OFFICIAL_VAL.exists(), reason="official RVL-CDIP val.txt not present")
def test_official_val_list():
    counts = collections.Counter()
    lines = OFFICIAL_VAL.read_text().splitlines()
    for line in lines:
        counts[int(line.split(" ")[1])] += 1
    pages, bad_lines = labels.read_labels(str(OFFICIAL_VAL))
    assert bad_lines == []
    assert len(pages) == len(lines) == 40_000
    assert collections.Counter(page.label for page in pages) == counts
    assert sum(counts.values()) == 40_000 and sorted(counts) == list(range(NUM_CLASSES))
    assert pages[0] == Page(*lines[0].split(" ")[:1], int(lines[0].split(" ")[1]))


def _tree(root, files):
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return str(root)


def test_discover_names_ids_and_nested_folders(tmp_path):
    root = _tree(tmp_path, [
        "Scientific_Report/a.tif", "scientific-report/deep/er/b.TIFF",  # both class 5
        "LETTER/x.tif", "LETTER/notes.txt", "15/m.tiff", "file folder/f.tif", "Memo/2/z.Tif",
    ])
    pages = labels.discover(root)
    assert pages == sorted([
        Page("Scientific_Report/a.tif", 5), Page("scientific-report/deep/er/b.TIFF", 5),
        Page("LETTER/x.tif", 0), Page("15/m.tiff", 15), Page("file folder/f.tif", 8),
        Page("Memo/2/z.Tif", 15)])
    assert labels.discover(root) == pages  # deterministic


def test_discover_sample(sample_dir):
    pages = labels.discover(str(sample_dir / "images"))
    assert collections.Counter(page.label for page in pages) == {i: 6 for i in range(NUM_CLASSES)}
    official = labels.read_labels(str(sample_dir / "labels.txt")).pages
    assert sorted(official) == pages


def test_discover_unknown_folders_are_listed(tmp_path):
    root = _tree(tmp_path, ["letter/a.tif", "recipes/b.tif", "16/c.tif", "memo/d.tif"])
    with pytest.raises(LabelFileError, match="unknown class folders: 16, recipes .*--class_names"):
        labels.discover(root)


def test_discover_with_class_names(tmp_path):
    root = _tree(tmp_path, ["cats/a.tif", "dogs/b.tif", "dogs/c.tif", "Big Birds/d.tif"])
    pages = labels.discover(root, class_names=["dogs", "big_birds", "cats"])
    assert pages == [Page("Big Birds/d.tif", 1), Page("cats/a.tif", 2), Page("dogs/b.tif", 0),
                     Page("dogs/c.tif", 0)]
    with pytest.raises(LabelFileError, match="unknown class folders: Big Birds"):
        labels.discover(root, class_names=["dogs", "cats"])
    with pytest.raises(LabelFileError, match="no folder for classes: fish"):
        labels.discover(root, class_names=["dogs", "cats", "big birds", "fish"])


def test_discover_errors(tmp_path):
    with pytest.raises(LabelFileError, match="does not exist"):
        labels.discover(str(tmp_path / "nope"))
    with pytest.raises(LabelFileError, match="no class folders"):
        labels.discover(_tree(tmp_path / "flat", ["a.tif"]))
    with pytest.raises(LabelFileError, match="no .tif/.tiff files"):
        labels.discover(_tree(tmp_path / "empty", ["memo/readme.txt"]))


def test_class_name_normalization():
    assert {labels.normalize_class_name(n) for n in
            ["File Folder", "file_folder", "FILE-FOLDER", " file  folder "]} == {"file folder"}
    assert all(labels.normalize_class_name(n) == n for n in RVL_CDIP_CLASSES)
