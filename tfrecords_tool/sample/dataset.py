"""The sample on disk: rendered pages as TIFF files under images/, labels.txt and labels.csv."""
import os

import numpy as np

from tfrecords_tool.classes import NUM_CLASSES, RVL_CDIP_CLASSES
from tfrecords_tool.sample.layouts import LAYOUTS, page_size
from tfrecords_tool.sample.page import Page
from tfrecords_tool.sample.scanner import scan
from tfrecords_tool.sample.tiff import ALL_ENCODINGS, ENCODINGS, write_tiff


def class_folder(class_id):
    """Folder (and file-name prefix) of a class: its name with spaces replaced by `_`."""
    return RVL_CDIP_CLASSES[class_id].replace(" ", "_")


def render_page(class_id, rng, max_side=1000):
    """One synthetic scanned page of class `class_id` as a uint8 HxW array.

    `rng` is a numpy Generator (the only source of randomness); the longest side is `max_side`.
    """
    if not 0 <= int(class_id) < NUM_CLASSES:
        raise ValueError(f"class_id must be in 0..{NUM_CLASSES - 1}, got {class_id}")
    if int(max_side) < 32:
        raise ValueError(f"max_side must be at least 32, got {max_side}")
    w, h = page_size(int(class_id), rng, int(max_side))
    page = Page(w, h, rng)
    LAYOUTS[int(class_id)](page)
    return scan(page.img, rng, page.u)


def generate(output_dir, pages_per_class, seed=0, max_side=1000, encodings=ENCODINGS):
    """Writes a sample of 16 * pages_per_class TIFF pages plus labels.txt and labels.csv.

    Page i of class c is written to images/<folder>/<folder>_<i:04d>.tif with encoding
    encodings[(c * pages_per_class + i) % len(encodings)], except one page of the whole sample
    (chosen by the seed) which is written as a two-page "multipage" TIFF. Each page depends only
    on (seed, c, i, max_side). Existing files of the same names are overwritten, other files
    are left alone. Returns a dict: output_dir, images_dir, labels_txt, labels_csv, num_pages,
    num_classes, pages_per_class, encoding_counts, encodings ({relative path: encoding}) and
    multipage (the relative path of the multi-page file).
    """
    pages_per_class = int(pages_per_class)
    if pages_per_class < 1:
        raise ValueError(f"pages_per_class must be >= 1, got {pages_per_class}")
    encodings = tuple(encodings)
    unknown = [e for e in encodings if e not in ALL_ENCODINGS]
    if not encodings or unknown:
        raise ValueError(f"unknown encodings {unknown}; expected some of {ALL_ENCODINGS}")
    output_dir = os.fspath(output_dir)
    images_dir = os.path.join(output_dir, "images")
    total = NUM_CLASSES * pages_per_class
    multipage_index = int(np.random.default_rng([seed, 2**20 + 1]).integers(total))
    rows = []
    counts = {}
    file_encodings = {}
    multipage_path = None
    for c in range(NUM_CLASSES):
        folder = class_folder(c)
        os.makedirs(os.path.join(images_dir, folder), exist_ok=True)
        for i in range(pages_per_class):
            k = c * pages_per_class + i
            rel = f"{folder}/{folder}_{i:04d}.tif"
            rng = np.random.default_rng([seed, c, i])
            pixels = render_page(c, rng, max_side)
            encoding = encodings[k % len(encodings)]
            second = None
            if k == multipage_index:
                encoding = "multipage"
                multipage_path = rel
            if encoding == "multipage":
                second = render_page(c, np.random.default_rng([seed, c, i, 1]), max_side)
            write_tiff(os.path.join(images_dir, rel), pixels, encoding, second_page=second)
            counts[encoding] = counts.get(encoding, 0) + 1
            file_encodings[rel] = encoding
            rows.append((rel, c))
    order = np.random.default_rng([seed, 2**20 + 2]).permutation(len(rows))
    rows = [rows[j] for j in order]
    labels_txt = os.path.join(output_dir, "labels.txt")
    labels_csv = os.path.join(output_dir, "labels.csv")
    with open(labels_txt, "w", newline="\n") as f:
        f.writelines(f"{p} {lab}\n" for p, lab in rows)
    with open(labels_csv, "w", newline="\n") as f:
        f.write("path,label\n")
        f.writelines(f"{p},{lab}\n" for p, lab in rows)
    return {
        "output_dir": output_dir,
        "images_dir": images_dir,
        "labels_txt": labels_txt,
        "labels_csv": labels_csv,
        "num_pages": total,
        "num_classes": NUM_CLASSES,
        "pages_per_class": pages_per_class,
        "encoding_counts": counts,
        "encodings": file_encodings,
        "multipage": multipage_path,
    }
