"""The record schema: png and jpeg records read by a standard reader (the `image/*` keys and
tf.io.decode_image, no project code) give the converter's pixels; raw pixels have a key of their
own; the trainer's parser reads every format."""
import numpy as np
import pytest
import tensorflow as tf

from tfrecords_tool import conversion, decode, records
from trainer import data

SIZE = 64
# JPEG at the default quality (90) on the sample's pages: stated bounds of the pixel error.
JPEG_MEAN_ERROR, JPEG_MAX_ERROR = 2.5, 32  # measured: 1.9 and 18

# What a reader outside this project knows: the ecosystem's standard keys.
STANDARD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
}


def test_the_key_constants_are_the_ecosystems_keys():
    """The tests and tools use records.*_KEY; the strings themselves are pinned here (and in
    STANDARD_FEATURES above, which stays literal: it is what a reader outside the project
    knows)."""
    assert (records.ENCODED_KEY, records.RAW_KEY, records.FORMAT_KEY, records.HEIGHT_KEY,
            records.WIDTH_KEY, records.CHANNELS_KEY, records.LABEL_KEY, records.FILENAME_KEY) == (
        "image/encoded", "image/raw", "image/format", "image/height", "image/width",
        "image/channels", "image/class/label", "image/filename")
    assert set(STANDARD_FEATURES) <= set(records.FEATURES)


@pytest.fixture(scope="module")
def converted(sample_dir, tmp_path_factory):
    """{format: (shard files, {filename: converter pixels})} of the sample at SIZE."""
    root = tmp_path_factory.mktemp("formats")
    out = {}
    for image_format in records.IMAGE_FORMATS:
        conversion.convert(output_dir=str(root / image_format),
                           images_dir=str(sample_dir / "images"),
                           labels=str(sample_dir / "labels.txt"), num_shards=2, image_size=SIZE,
                           image_format=image_format, workers=0)
        out[image_format] = data.shard_files(str(root / image_format), "labels")
    return out


def _converter_pixels(sample_dir, filename):
    return decode.load_page(str(sample_dir / "images" / filename), SIZE)


def _standard_read(files):
    """(filename, label, format, pixels [H, W]) of every record, as any TF reader would."""
    for serialized in tf.data.TFRecordDataset(files):
        example = tf.io.parse_single_example(serialized, STANDARD_FEATURES)
        pixels = tf.io.decode_image(example["image/encoded"], expand_animations=False)
        yield (example["image/filename"].numpy().decode(), int(example["image/class/label"]),
               example["image/format"].numpy().decode(), pixels.numpy()[..., 0])


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_standard_reader_gets_the_converters_pixels(converted, sample_dir, image_format):
    listed = dict(line.split(" ") for line in (sample_dir / "labels.txt").read_text().splitlines())
    errors = []
    for filename, label, stored_format, pixels in _standard_read(converted[image_format]):
        assert (label, stored_format) == (int(listed.pop(filename)), image_format)
        want = _converter_pixels(sample_dir, filename)
        assert pixels.shape == want.shape
        if image_format == "png":
            np.testing.assert_array_equal(pixels, want, err_msg=filename)
        errors.append(np.abs(pixels.astype(int) - want))
    assert not listed, "records missing"
    if image_format == "jpeg":
        errors = np.stack(errors)
        assert 0 < errors.mean() <= JPEG_MEAN_ERROR and errors.max() <= JPEG_MAX_ERROR


def test_raw_pixels_live_under_their_own_key(converted, sample_dir):
    serialized = next(iter(tf.data.TFRecordDataset(converted["raw"]))).numpy()
    example = tf.train.Example.FromString(serialized)
    assert records.ENCODED_KEY not in example.features.feature
    parsed = records.parse_one(serialized)
    assert parsed[records.FORMAT_KEY] == b"raw"
    pixels = np.frombuffer(parsed[records.RAW_KEY], np.uint8).reshape(SIZE, SIZE)
    np.testing.assert_array_equal(
        pixels, _converter_pixels(sample_dir, parsed[records.FILENAME_KEY].decode()))


@pytest.mark.parametrize("image_format", records.IMAGE_FORMATS)
def test_trainer_pipeline_reads_every_format(converted, image_format):
    """trainer.data (training, verify and evaluate parse with it) gives what the standard reader
    gives for png/jpeg and the raw bytes for raw, record for record."""
    for path in converted[image_format]:  # one file: the dataset keeps its record order
        dataset = data.image_dataset([path], SIZE, image_format, batch_size=16, training=False)
        images = np.concatenate([batch.numpy() for batch, _ in dataset])[..., 0]
        if image_format == "raw":
            want = np.stack([np.frombuffer(records.parse_one(r.numpy())[records.RAW_KEY], np.uint8)
                             for r in tf.data.TFRecordDataset(path)]).reshape(-1, SIZE, SIZE)
        else:
            want = np.stack([pixels for *_, pixels in _standard_read([path])])
        np.testing.assert_array_equal(images, want)
