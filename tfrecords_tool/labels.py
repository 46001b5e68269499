"""Stage 1: the pages to convert, from a label file or from one folder per class.

Label files come in two formats, told apart by their first non-blank line:
  official RVL-CDIP: `path label` per line, no header;
  CSV: a header naming a `path` and a `label` column, then one row per page.
Paths are relative to the images directory. A path listed twice keeps its first line; the
repeats are reported in one warning rather than stopping the run, since hand-merged lists often
repeat a page with the same label.
"""
import csv
import posixpath
import re
from typing import NamedTuple

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


def _line_error(label_file, number, problem):
    return LabelFileError(f"{label_file}:{number}: {problem}")


def _fields(lines, label_file):
    """(line number, path, label text) of each non-blank line, in either format."""
    numbered = [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        return
    header = [field.strip().lower() for field in next(csv.reader([numbered[0][1]]))]
    if "path" in header and "label" in header:
        for number, line in numbered[1:]:
            row = next(csv.reader([line]))
            if len(row) != len(header):
                raise _line_error(label_file, number,
                                  f"expected {len(header)} CSV fields, found {len(row)}")
            yield number, row[header.index("path")].strip(), row[header.index("label")].strip()
        return
    for number, line in numbered:
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise _line_error(label_file, number,
                              "expected `path label` (or CSV with a `path,label` header)")
        yield number, fields[0], fields[1]


def read_labels(label_file, num_classes=len(RVL_CDIP_CLASSES), allow_outside=False):
    """Pages of an official or CSV label file, in file order, repeated paths dropped."""
    with tf.io.gfile.GFile(label_file, "rb") as f:
        data = f.read()
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise LabelFileError(f"{label_file}: not UTF-8 text ({e})") from None
    pages, first, repeats, conflicts = [], {}, [], []
    for number, path, label_text in _fields(lines, label_file):
        try:
            page = _check_page(path, label_text, num_classes, allow_outside)
        except ValueError as e:
            raise _line_error(label_file, number, e) from None
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
    if not pages:
        raise LabelFileError(f"{label_file}: no pages listed")
    _warn_list(f"{label_file}: {len(conflicts)} paths listed with conflicting labels, the first "
               "line's label kept (check which is right)", conflicts)
    _warn_list(f"{label_file}: {len(repeats)} repeated paths ignored, first line kept", repeats)
    return pages


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
