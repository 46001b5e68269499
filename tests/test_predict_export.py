"""trainer.predict (pages through load_page) and trainer.export (the SavedModel, loaded in a fresh
process that imports nothing but TensorFlow)."""
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfrecords_tool import sample
from tfrecords_tool.classes import RVL_CDIP_CLASSES
from tfrecords_tool.decode import load_page
from trained_run import IMAGE_SIZE, check, run_module, run_python, trained_run  # noqa: F401
from trainer import artifacts

# Loads the default export as stock TensorFlow (Serving) would: nothing but TensorFlow imported.
SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
serve, serve_pixels = model.signatures["serving_default"], model.signatures["pixels"]
requests = json.load(open(sys.argv[2]))
outputs = [serve(image_bytes=tf.constant([open(p, "rb").read() for p in requests["files"]]))]
for path in requests["pixels"]:
    outputs.append(serve_pixels(pixels=tf.constant(np.load(path))))
result = {"probabilities": [p for out in outputs for p in out["probabilities"].numpy().tolist()],
          "class_id": [i for out in outputs for i in out["class_id"].numpy().tolist()],
          "class_name": [s.decode() for out in outputs for s in out["class_name"].numpy()]}
empty = serve(image_bytes=tf.constant([], tf.string))
result["empty_shapes"] = {name: value.shape.as_list() for name, value in empty.items()}
try:
    serve(image_bytes=tf.constant([open(requests["tiff"], "rb").read()]))
except tf.errors.InvalidArgumentError as e:
    result["tiff_error"] = e.message
try:
    serve_pixels(pixels=tf.zeros([5], tf.uint8))
except tf.errors.InvalidArgumentError as e:
    result["rank_error"] = e.message
result["other_modules"] = sorted({m.split(".")[0] for m in sys.modules} & {
    "trainer", "tfrecords_tool", "tensorflow_io"})
print(json.dumps(result))
"""

# The --tiff_in_graph export, as a client with tensorflow-io's op library loads it.
SERVE_TIFF = r"""
import json, os, sys
import tensorflow as tf
import tensorflow_io

tf.load_op_library(os.path.join(os.path.dirname(tensorflow_io.__file__), "python", "ops",
                                "libtensorflow_io.so"))
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(image_bytes=tf.constant([open(p, "rb").read() for p in sys.argv[3:]]))
result = {"probabilities": out["probabilities"].numpy().tolist()}
try:
    serve(image_bytes=tf.constant([open(sys.argv[2], "rb").read()]))
except tf.errors.InvalidArgumentError as e:
    result["damaged_error"] = e.message
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def model(trained_run):  # noqa: F811
    return artifacts.load_model(str(trained_run.model_dir))


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
    assert "core TensorFlow ops only" in result.stdout
    return trained_run.model_dir / "export" / "1"


def _page(directory):
    """A generated page as a TIFF, and what load_page makes of it."""
    pixels = sample.render_page(6, np.random.default_rng(7), max_side=400)
    tiff = directory / "page.tif"
    sample.write_tiff(tiff, pixels, sample.ALL_ENCODINGS[0])
    return tiff, pixels


def test_default_export_serves_in_plain_tensorflow(model, export_dir, tmp_path):
    """PNG, BMP, GIF and JPEG bytes and raw pixels of one page, in a process with TensorFlow only:
    the lossless ones give what trainer.predict gives for the TIFF."""
    tiff, pixels = _page(tmp_path)
    small = load_page(str(tiff), IMAGE_SIZE)
    lossless = {"page.png": pixels, "page-small.png": small, "page.bmp": pixels, "page.gif": pixels}
    for name, image in lossless.items():
        Image.fromarray(image).convert("RGB" if name.endswith(".bmp") else "L").save(tmp_path / name)
    Image.fromarray(pixels).save(tmp_path / "page.jpg", quality=95)
    rgb = np.repeat(pixels[..., None], 3, axis=-1)
    arrays = [pixels, pixels[..., None], rgb, np.stack([pixels[..., None]] * 2)]  # 1+1+1+2 pages
    requests = {"files": [str(tmp_path / name) for name in [*lossless, "page.jpg"]],
                "pixels": [], "tiff": str(tiff)}
    for index, array in enumerate(arrays):
        requests["pixels"].append(str(tmp_path / f"pixels{index}.npy"))
        np.save(requests["pixels"][-1], array)
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    result = check(run_python(script, export_dir, tmp_path / "requests.json", cwd=tmp_path))
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["other_modules"] == []

    num_lossless, num_pixel_pages = len(lossless), 5
    probs = np.array(served["probabilities"])
    assert probs.shape == (num_lossless + 1 + num_pixel_pages, len(RVL_CDIP_CLASSES))
    expected = _expected(model, [tiff])[0]
    jpeg = num_lossless
    for index in [*range(num_lossless), *range(jpeg + 1, len(probs))]:
        np.testing.assert_allclose(probs[index], expected, atol=1e-4, err_msg=f"request {index}")
    np.testing.assert_allclose(probs[jpeg].sum(), 1.0, atol=1e-5)
    assert served["class_id"][0] == expected.argmax()
    assert served["class_name"] == [RVL_CDIP_CLASSES[i] for i in served["class_id"]]
    assert "pixels" in served["tiff_error"] and "--tiff_in_graph" in served["tiff_error"]
    assert "got shape" in served["rank_error"]
    num_classes = len(RVL_CDIP_CLASSES)
    assert served["empty_shapes"] == {"probabilities": [0, num_classes], "class_id": [0],
                                      "class_name": [0]}


def test_tiff_in_graph_export_agrees_with_predict(model, trained_run, tmp_path):  # noqa: F811
    export = tmp_path / "export-tiff" / "1"
    result = check(run_module("trainer.export", f"--model_dir={trained_run.model_dir}",
                              f"--export_dir={export}", "--tiff_in_graph"))
    assert "needs tensorflow-io's op library" in result.stdout
    pixels = sample.render_page(6, np.random.default_rng(7), max_side=400)
    tiffs = []
    for encoding in sample.ALL_ENCODINGS:
        tiffs.append(tmp_path / f"{encoding}.tif")
        sample.write_tiff(tiffs[-1], pixels, encoding)
    damaged = _damaged(tmp_path, tiffs[0])
    script = tmp_path / "serve_tiff.py"
    script.write_text(SERVE_TIFF)
    result = check(run_python(script, export, damaged, *tiffs, cwd=tmp_path))
    served = json.loads(result.stdout.strip().splitlines()[-1])
    for name, got, want in zip([p.name for p in tiffs], served["probabilities"],
                               _expected(model, tiffs)):
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)
    assert "TIFF" in served["damaged_error"]


def test_export_refuses_to_overwrite(trained_run, export_dir, capsys):  # noqa: F811
    from tfrecords_tool import cli
    from trainer.serving import export

    assert cli.call(lambda: export(model_dir=str(trained_run.model_dir))) == 2
    assert f"error: {export_dir} exists" in capsys.readouterr().err


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_serving_graph_resizes_pages_bit_for_bit_like_load_page(size):
    """export's in-graph reduce + bilinear passes vs Pillow's, on page shapes that take every
    branch: upscaling, no reduction, reduction on one axis only, uneven blocks at the edges."""
    from trainer.serving import decode_page  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(size)
    page = sample.render_page(3, rng, max_side=1000)
    shapes = [page.shape, (size // 2, size + 5), (size * 3 + 7, size), (1000, 721), (3300, 2550),
              (97, size * 5 + 3)]
    for height, width in shapes:
        resized = Image.fromarray(page).resize((width, height), Image.BILINEAR)
        png, tiff = io.BytesIO(), io.BytesIO()
        resized.save(png, format="PNG")
        resized.save(tiff, format="TIFF")
        served = decode_page(tf.constant(png.getvalue()), size).numpy()[..., 0]
        np.testing.assert_array_equal(served, load_page(tiff.getvalue(), size),
                                      err_msg=f"{height}x{width} page at {size}")
