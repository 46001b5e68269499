"""Stage 1: the pages to convert, from a label file or from one folder per class.

Label files come in two formats, told apart by their first non-blank line:
  official RVL-CDIP: `path label` per line, no header;
  CSV: a header naming a `path` and a `label` column, then one row per page.
Paths are relative to the images directory. A path listed twice keeps its first line; the
repeats are reported in one warning rather than stopping the run, since hand-merged lists often
repeat a page with the same label. A malformed line (wrong fields, a label that is no class id,
a path outside the images directory) is skipped with a warning naming its file and line number,
and the rest is converted; only a file with more malformed lines than `max_bad_fraction` of
its lines (e.g. not a label file at all) stops the run.
"""
import csv
import posixpath
import re
from typing import List, NamedTuple

from absl import logging
import tensorflow as tf

from tfrecords_tool import errors
from tfrecords_tool.classes import RVL_CDIP_CLASSES

TIFF_EXTENSIONS = (".tif", ".tiff")


class LabelFileError(errors.ToolError, ValueError):
    """A label file or a class folder layout that cannot be used."""


class Page(NamedTuple):
    path: str  # as listed: relative to the images directory unless outside paths are allowed
    label: int


class BadLine(NamedTuple):
    line: int      # 1-based line number in the label file
    problem: str


class LabelList(NamedTuple):
    pages: List[Page]        # file order, repeated paths dropped
    bad_lines: List[BadLine]  # malformed lines, skipped


# A fraction of bad lines says little about a short file (3 lines, 1 typo): below this many
# lines every good line is used.
MIN_LINES_FOR_BAD_FRACTION = 20
BAD_LINES_SHOWN = 10  # one warning each; all are in the manifest


def _is_absolute(path):
    return path.startswith("/") or "://" in path


def full_path(images_dir, path):
    """Where the page `path` of a label list lives."""
    return path if _is_absolute(path) else posixpath.join(images_dir, path)


def _check_page(path, label_text, num_classes, allow_outside):
    """The Page of one label line; ValueError saying what is wrong with it."""
    if not path:
        raise ValueError("empty path")
    if not allow_outside:
        normalized = posixpath.normpath(path)
        if _is_absolute(path):
            raise ValueError(f"absolute path {path!r} (--allow_outside_paths accepts it)")
        if normalized == ".." or normalized.startswith("../"):
            raise ValueError(f"path {path!r} leaves the images directory "
                             "(--allow_outside_paths accepts it)")
    if not re.fullmatch(r"-?[0-9]+", label_text):
        raise ValueError(f"label {label_text!r} is not an integer")
    label = int(label_text)
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} is outside 0..{num_classes - 1}")
    return Page(path, label)


def _fields(lines):
    """(line number, path, label text) of each non-blank line, in either format; (line number,
    None, problem) for a line without the format's fields."""
    numbered = [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        return
    header = [field.strip().lower() for field in next(csv.reader([numbered[0][1]]))]
    if "path" in header and "label" in header:
        for number, line in numbered[1:]:
            row = next(csv.reader([line]))
            if len(row) != len(header):
                yield number, None, f"expected {len(header)} CSV fields, found {len(row)}"
                continue
            yield number, row[header.index("path")].strip(), row[header.index("label")].strip()
        return
    for number, line in numbered:
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            yield number, None, "expected `path label` (or CSV with a `path,label` header)"
            continue
        yield number, fields[0], fields[1]


def read_labels(label_file, num_classes=len(RVL_CDIP_CLASSES), allow_outside=False,
                max_bad_fraction=0.1):
    """LabelList of an official or CSV label file. Malformed lines are skipped, each logged as
    `FILE:LINE: problem`; raises LabelFileError when no line is good, or when more than
    `max_bad_fraction` of the lines (of a file of MIN_LINES_FOR_BAD_FRACTION or more) are bad."""
    with tf.io.gfile.GFile(label_file, "rb") as f:
        data = f.read()
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise LabelFileError(f"{label_file}: not UTF-8 text ({e})") from None
    pages, bad, first, repeats, conflicts = [], [], {}, [], []
    for number, path, label_text in _fields(lines):
        try:
            if path is None:
                raise ValueError(label_text)
            page = _check_page(path, label_text, num_classes, allow_outside)
        except ValueError as e:
            bad.append(BadLine(number, str(e)))
            if len(bad) <= BAD_LINES_SHOWN:
                logging.warning("%s:%d: %s; line skipped%s", label_file, number, e,
                                " (further bad lines: in the manifest only)"
                                if len(bad) == BAD_LINES_SHOWN else "")
            continue
        key = posixpath.normpath(path)
        if key not in first:
            first[key] = number, page
            pages.append(page)
            continue
        kept_line, kept = first[key]
        if kept.label == page.label:
            repeats.append(f"{path} (lines {kept_line} and {number})")
        else:
            conflicts.append(f"{path} (line {kept_line}: label {kept.label}, line {number}: "
                             f"label {page.label}; kept {kept.label})")
    listed = len(bad) + len(pages) + len(repeats) + len(conflicts)
    first_bad = f" (first: line {bad[0].line}: {bad[0].problem})" if bad else ""
    if not pages:
        raise LabelFileError(f"{label_file}: no pages listed" + (
            f"; all {len(bad)} lines are malformed{first_bad}" if bad else ""))
    if listed >= MIN_LINES_FOR_BAD_FRACTION and len(bad) > max_bad_fraction * listed:
        raise LabelFileError(f"{label_file}: {len(bad)} of {listed} lines are malformed"
                             f"{first_bad}, more than --max_bad_fraction={max_bad_fraction}: "
                             "is it a label file?")
    if bad:
        logging.warning("%s: %d malformed lines skipped, %d pages listed", label_file, len(bad),
                        len(pages))
    _warn_list(f"{label_file}: {len(conflicts)} paths listed with conflicting labels, the first "
               "line's label kept (check which is right)", conflicts)
    _warn_list(f"{label_file}: {len(repeats)} repeated paths ignored, first line kept", repeats)
    return LabelList(pages, bad)


def _warn_list(message, items, shown=10):
    if items:
        more = f" and {len(items) - shown} more" if len(items) > shown else ""
        logging.warning("%s: %s%s", message, ", ".join(items[:shown]), more)


def normalize_class_name(name):
    """Case, spaces, underscores and hyphens do not matter in class folder names."""
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def _folder_classes(folders, class_names):
    """Class id of each class folder name; raises on folders that name no class."""
    if class_names:
        known = {normalize_class_name(name): i for i, name in enumerate(class_names)}
        if len(known) != len(class_names):
            raise LabelFileError(f"class names repeat: {', '.join(class_names)}")
    else:
        known = {normalize_class_name(name): i for i, name in enumerate(RVL_CDIP_CLASSES)}
        known.update({str(i): i for i in range(len(RVL_CDIP_CLASSES))})
    ids = {folder: known.get(normalize_class_name(folder)) for folder in folders}
    unknown = sorted(folder for folder, i in ids.items() if i is None)
    if unknown:
        expected = ("the given class names" if class_names
                    else f"RVL-CDIP class names or ids 0..{len(RVL_CDIP_CLASSES) - 1}")
        raise LabelFileError(f"unknown class folders: {', '.join(unknown)} (expected {expected}; "
                             "--class_names=a,b,... names the classes of other data sets)")
    if class_names:
        missing = [name for i, name in enumerate(class_names) if i not in ids.values()]
        if missing:
            raise LabelFileError(f"no folder for classes: {', '.join(missing)}")
    return ids


def discover(images_dir, class_names=None):
    """Pages of an `images_dir/<class folder>/**/*.tif` tree, sorted by path.

    Folders name RVL-CDIP classes (or ids 0..15) unless `class_names` lists the folders, in class
    id order.
    """
    if not tf.io.gfile.isdir(images_dir):
        raise LabelFileError(f"images directory {images_dir} does not exist")
    folders = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(images_dir)
                     if tf.io.gfile.isdir(posixpath.join(images_dir, name)))
    if not folders:
        raise LabelFileError(f"{images_dir} has no class folders (or pass --labels)")
    pages = []
    for folder, label in _folder_classes(folders, class_names).items():
        root = posixpath.join(images_dir, folder)
        for directory, _, files in tf.io.gfile.walk(root):
            relative = posixpath.join(folder, directory[len(root):].strip("/"))
            pages.extend(Page(posixpath.join(relative, name), label) for name in files
                         if name.lower().endswith(TIFF_EXTENSIONS))
    if not pages:
        raise LabelFileError(f"no .tif/.tiff files under the class folders of {images_dir}")
    return sorted(pages)
