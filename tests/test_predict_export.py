"""trainer.predict (pages through load_page) and trainer.export (the SavedModel, loaded in a fresh
process that imports nothing from this repository)."""
import io
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from tfrecords_tool import sample
from tfrecords_tool.classes import RVL_CDIP_CLASSES
from tfrecords_tool.decode import load_page
from trained_run import IMAGE_SIZE, check, run_module, run_python, trained_run  # noqa: F401
from trainer import models  # noqa: F401  (registers the custom layers for load_model)

# Loads the export like a client would: TensorFlow plus tensorflow-io's op library only.
SERVE = r"""
import json, os, sys
import tensorflow as tf
import tensorflow_io

tf.load_op_library(os.path.join(os.path.dirname(tensorflow_io.__file__), "python", "ops",
                                "libtensorflow_io.so"))
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(image_bytes=tf.constant([open(p, "rb").read() for p in sys.argv[3:]]))
result = {"probabilities": out["probabilities"].numpy().tolist(),
          "class_id": out["class_id"].numpy().tolist(),
          "class_name": [s.decode() for s in out["class_name"].numpy()]}
empty = serve(image_bytes=tf.constant([], tf.string))
result["empty_shapes"] = {name: value.shape.as_list() for name, value in empty.items()}
try:
    serve(image_bytes=tf.constant([open(sys.argv[2], "rb").read()]))
except tf.errors.InvalidArgumentError as e:
    result["damaged_error"] = e.message
result["repo_modules"] = [m for m in sys.modules
                          if m.split(".")[0] in ("trainer", "tfrecords_tool")]
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def model(trained_run):  # noqa: F811
    return keras.models.load_model(trained_run.model_dir / "final.keras", compile=False)


def _expected(model, paths):
    """What trainer.predict computes: load_page at the model's size, then the model."""
    pages = np.stack([load_page(str(p), IMAGE_SIZE) for p in paths])[..., None]
    return model.predict(pages, verbose=0)


def _damaged(directory, source):
    path = directory / "damaged.tif"
    path.write_bytes(source.read_bytes()[:300])  # TIFF header, no directory: truncated file
    return path


def test_predict_matches_model_and_survives_bad_pages(trained_run, model, tmp_path):  # noqa: F811
    good = sorted((trained_run.sample_dir / "images").rglob("*.tif"))[::17]
    damaged, missing = _damaged(tmp_path, good[0]), tmp_path / "missing.tif"
    files = [good[0], damaged, *good[1:], missing]
    result = run_module("trainer.predict", f"--model_dir={trained_run.model_dir}", *files,
                        "--json", "--top_k=16")
    assert result.returncode == 1, result.stderr
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["file"] for p in predictions] == [str(f) for f in files]
    errors = {p["file"]: p["error"] for p in predictions if "error" in p}
    assert set(errors) == {str(damaged), str(missing)}
    assert f"error: {damaged}: {errors[str(damaged)]}" in result.stderr
    assert f"error: {missing}: file not found" in result.stderr

    classified = [p for p in predictions if "top" in p]
    for prediction, expected in zip(classified, _expected(model, good)):
        top = prediction["top"]
        assert [t["class_name"] for t in top] == [RVL_CDIP_CLASSES[t["class_id"]] for t in top]
        assert top[0]["class_id"] == expected.argmax()
        probs = np.zeros(16)
        probs[[t["class_id"] for t in top]] = [t["probability"] for t in top]
        np.testing.assert_allclose(probs, expected, atol=1e-6)

    result = run_module("trainer.predict", f"--model_dir={trained_run.model_dir}", good[0],
                        damaged, "--top_k=2")
    assert result.returncode == 1
    line = result.stdout.strip()
    assert line.startswith(f"{good[0]}: ") and line.count(",") == 1, line
    assert f"error: {damaged}: " in result.stderr


@pytest.fixture(scope="module")
def export_dir(trained_run):  # noqa: F811
    result = check(run_module("trainer.export", f"--model_dir={trained_run.model_dir}"))
    assert "exported" in result.stdout
    return trained_run.model_dir / "export" / "1"


def _pages_in_every_encoding(directory):
    """One page as a TIFF in each of the sample's encodings, and as PNG (full size and S x S)."""
    pixels = sample.render_page(6, np.random.default_rng(7), max_side=400)
    tiffs = []
    for encoding in sample.ALL_ENCODINGS:
        tiffs.append(directory / f"{encoding}.tif")
        sample.write_tiff(tiffs[-1], pixels, encoding)
    pngs = {directory / "page.png": pixels,
            directory / "page-small.png": load_page(str(tiffs[0]), IMAGE_SIZE)}
    for path, image in pngs.items():
        Image.fromarray(image).save(path)
    return tiffs, list(pngs)


def test_export_in_fresh_process_agrees_with_predict(model, export_dir, tmp_path):
    tiffs, pngs = _pages_in_every_encoding(tmp_path)
    damaged = _damaged(tmp_path, tiffs[0])
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    result = check(run_python(script, export_dir, damaged, *tiffs, *pngs, cwd=tmp_path))
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["repo_modules"] == []

    # both PNGs show the first TIFF's page (lossless): same input as load_page(tiffs[0])
    expected = _expected(model, tiffs + [tiffs[0], tiffs[0]])
    probs = np.array(served["probabilities"])
    for name, got, want in zip([p.name for p in tiffs + pngs], probs, expected):
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(served["class_id"], expected.argmax(axis=1))
    assert served["class_name"] == [RVL_CDIP_CLASSES[i] for i in served["class_id"]]
    assert "TIFF" in served["damaged_error"]
    num_classes = len(RVL_CDIP_CLASSES)
    assert served["empty_shapes"] == {"probabilities": [0, num_classes], "class_id": [0],
                                      "class_name": [0]}


def test_export_refuses_to_overwrite(trained_run, export_dir):  # noqa: F811
    result = run_module("trainer.export", f"--model_dir={trained_run.model_dir}")
    assert result.returncode == 2
    assert f"{export_dir} exists" in result.stderr


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_serving_graph_resizes_pages_bit_for_bit_like_load_page(size):
    """export's in-graph reduce + bilinear passes vs Pillow's, on page shapes that take every
    branch: upscaling, no reduction, reduction on one axis only, uneven blocks at the edges."""
    from trainer.export import decode_page  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(size)
    page = sample.render_page(3, rng, max_side=1000)
    shapes = [page.shape, (size // 2, size + 5), (size * 3 + 7, size), (1000, 721), (3300, 2550),
              (97, size * 5 + 3)]
    for height, width in shapes:
        tiff = io.BytesIO()
        Image.fromarray(page).resize((width, height), Image.BILINEAR).save(tiff, format="TIFF")
        served = decode_page(tf.constant(tiff.getvalue()), size).numpy()[..., 0]
        np.testing.assert_array_equal(served, load_page(tiff.getvalue(), size),
                                      err_msg=f"{height}x{width} page at {size}")
