"""Pages written by other encoders (Ghostscript, libtiff's tiffcp, ImageMagick, tifffile) decode
to the pixels an independent decoder (ImageMagick) sees, or are refused with the true reason."""
import io
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
import tifffile

from tfrecords_tool import conversion
from tfrecords_tool import manifest
from tfrecords_tool import decode

TOOLS = ("gs", "tiffcp", "convert")
_PAGE_PS = b"""%!PS
/Helvetica findfont 14 scalefont setfont
20 220 moveto (INVOICE 12345) show
0.2 0.5 0.8 setrgbcolor 20 100 150 60 rectfill
0.6 setgray 30 150 100 30 rectfill
0 0 0 setrgbcolor 20 60 moveto (Total: 99.00) show
showpage
"""
_GS = ["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER"]


def _run(*command):
    done = subprocess.run(command, capture_output=True, timeout=120)
    # ImageMagick exits 1 over "Unknown tag 317" (Predictor, float pages) yet writes the file.
    assert done.returncode == 0 or os.path.getsize(command[-1]) > 0, done.stderr


@pytest.fixture(scope="module")
def wild(tmp_path_factory):
    """{name: path} of pages made by Ghostscript, tiffcp and ImageMagick (Debian packages that
    .ci/run installs; elsewhere the tests skip without them)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        if os.environ.get("REQUIRE_TIFF_TOOLS"):
            pytest.fail(f"REQUIRE_TIFF_TOOLS is set but {missing} are not installed")
        pytest.skip(f"needs {missing} (Debian: ghostscript libtiff-tools imagemagick)")
    d = tmp_path_factory.mktemp("wild")
    (d / "page.ps").write_bytes(_PAGE_PS)
    page = ["-g200x260", "-r72", str(d / "page.ps")]
    for name, device in [("gray8", "tiffgray"), ("rgb8", "tiff24nc"), ("rgb4", "tiff12nc"),
                         ("cmyk", "tiff32nc"), ("rgb16", "tiff48nc"), ("g4", "tiffg4")]:
        _run(*_GS, f"-sDEVICE={device}", f"-sOutputFile={d / name}.tif", *page)
    _run(*_GS, "-sDEVICE=tiffg4", f"-sOutputFile={d / 'huge_g4'}.tif", "-g12000x16000", "-r1000",
         str(d / "page.ps"))
    for name, source, compression in [("zstd", "gray8", "zstd"), ("webp", "rgb8", "webp"),
                                      ("lerc", "gray8", "lerc"), ("lzma", "gray8", "lzma"),
                                      ("jbig", "g4", "jbig"), ("g3", "g4", "g3:2d"),
                                      ("deflate_tiled", "gray8", "zip")]:
        tiles = ["-t"] if "tiled" in name else []
        _run("tiffcp", *tiles, "-c", compression, f"{d / source}.tif", f"{d / name}.tif")
    gray8 = str(d / "gray8.tif")
    for name, options in [
            ("float32", ["-depth", "32", "-define", "quantum:format=floating-point"]),
            ("uint32", ["-depth", "32"]), ("uint16", ["-depth", "16"]),
            ("gray_alpha", ["-alpha", "set", "-channel", "A", "-evaluate", "set", "40%",
                            "+channel"])]:
        _run("convert", gray8, *options, f"{d / name}.tif")
    _run("convert", str(d / "rgb8.tif"), "-alpha", "set", "-channel", "A", "-evaluate", "set",
         "70%", "+channel", str(d / "rgb_alpha.tif"))
    return {path.stem: path for path in d.glob("*.tif")}


def _magick(path, *options, channels="gray"):
    """ImageMagick's own decode of the first page, as uint8 samples."""
    out = subprocess.run(["convert", f"{path}[0]", *options, "-depth", "8", f"{channels}:-"],
                         check=True, capture_output=True, timeout=60).stdout
    width, height = 200, 260
    samples = np.frombuffer(out, np.uint8)
    return samples.reshape(height, width, -1).squeeze(-1) if channels == "gray" else \
        samples.reshape(height, width, len(channels))


def _luma(rgb):
    return np.floor(rgb.astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5)


def _gray(path):
    gray, page_warnings, errors = decode.gray_page(path.read_bytes())
    assert errors == ()
    return np.asarray(gray).astype(int)


@pytest.mark.parametrize("name", ["zstd", "lerc", "lzma", "deflate_tiled", "float32", "uint32",
                                  "uint16"])
def test_valid_gray_pages_of_other_encoders_decode_exactly(wild, name):
    """Same grey samples as Ghostscript's 8-bit page, in codecs and sample formats Pillow
    refuses (ZSTD, LERC) or reads wrongly (float: black, uint32: near-white)."""
    expected = _magick(wild["gray8"])
    assert len(np.unique(expected)) > 2  # a real page with grey tones
    np.testing.assert_array_equal(_gray(wild[name]), expected)
    np.testing.assert_array_equal(_gray(wild[name]), _magick(wild[name]))


@pytest.mark.parametrize("name", ["rgb8", "rgb4", "rgb16", "webp"])
def test_colour_pages_become_their_luma(wild, name):
    expected = _luma(_magick(wild[name], channels="rgb"))
    assert np.abs(_gray(wild[name]) - expected).max() <= 1


def test_alpha_is_composited_on_white(wild):
    for name, opaque in (("gray_alpha", "gray8"), ("rgb_alpha", "rgb8")):
        flattened = _magick(wild[name], "-background", "white", "-flatten", channels="rgb")
        assert np.abs(_gray(wild[name]) - _luma(flattened)).max() <= 1, name
        # the alpha matters: the same page without it is darker
        assert _gray(wild[name]).mean() > _gray(wild[opaque]).mean() + 3, name


def test_cmyk_by_its_inks(wild):
    rgb = _magick(wild["cmyk"], "-colorspace", "sRGB", channels="rgb")
    assert np.abs(_gray(wild["cmyk"]) - _luma(rgb)).max() <= 2


def test_fax_pages_and_their_limits(wild):
    for name in ("g4", "g3"):
        np.testing.assert_array_equal(_gray(wild[name]), _magick(wild[name]))
    huge = wild["huge_g4"].read_bytes()
    pixels = decode.decode_page(huge, 160).pixels  # 192 megapixels: above Pillow's bomb limit
    assert pixels.shape == (160, 160) and pixels.min() < 128 < pixels.max()
    with pytest.raises(decode.PageError, match=r"^page is 192 megapixels, above "
                                               r"--max_page_megapixels=100$"):
        decode.gray_page(huge, max_megapixels=100)
    with pytest.raises(decode.PageError, match="^unsupported compression JBIG$"):
        decode.gray_page(wild["jbig"].read_bytes())


def _noisy_g4(path):
    with Image.open(path) as image:
        start, length = image.tag_v2[273][0], image.tag_v2[279][0]
    data = bytearray(path.read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, length - 10, dtype=np.uint8)
    data[start + 10:start + length] = noise.tobytes()
    return bytes(data)


def test_half_decodable_page_is_refused_with_libtiffs_words(wild, capfd):
    noisy = _noisy_g4(wild["g4"])
    with pytest.raises(decode.PageError, match=r"^decoder error: Fax4Decode: Bad code word"):
        decode.gray_page(noisy)
    kept = decode.decode_page(noisy, 64, keep_decoder_errors=True)
    assert kept.pixels.shape == (64, 64) and "Fax4Decode" in kept.errors[0]
    assert capfd.readouterr().err == ""  # libtiff's lines were captured, not printed


def test_signed_and_float_ranges_written_by_tifffile():
    ramp = np.linspace(0, 1, 256)
    cases = {
        "int16": ((ramp * 65535 - 32768).round().astype(np.int16), {}),
        "float_smin_smax": ((ramp * 4000 - 1000).astype(np.float32),
                            {"extratags": [(340, "d", 1, -1000.0, False),
                                           (341, "d", 1, 3000.0, False)]}),
        "float01": (ramp.astype(np.float32), {}),
    }
    expected = np.floor(ramp * 255 + 0.5)
    for name, (row, options) in cases.items():
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, np.tile(row, (4, 1)), photometric="minisblack", **options)
        gray = np.asarray(decode.gray_page(buffer.getvalue())[0]).astype(int)
        assert np.abs(gray[0] - expected).max() <= 1, name


def test_converter_lists_every_page_with_its_reason(wild, tmp_path, caplog, capfd):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("zstd", "rgb4", "float32", "gray_alpha", "jbig"):
        shutil.copy(wild[name], images / f"{name}.tif")
    (images / "noisy.tif").write_bytes(_noisy_g4(wild["g4"]))
    names = ["zstd", "rgb4", "float32", "gray_alpha", "jbig", "noisy"]
    (tmp_path / "pages.txt").write_text("".join(f"{n}.tif {i}\n" for i, n in enumerate(names)))
    with caplog.at_level(logging.WARNING):
        conversion.convert(output_dir=str(tmp_path / "out"), images_dir=str(images),
                           labels=str(tmp_path / "pages.txt"), image_size=32,
                           max_bad_fraction=0.5, workers=0)
    written = manifest.read_json(str(tmp_path / "out" / "pages-manifest.json"))
    assert written["num_records"] == 4
    reasons = {s["path"]: s["reason"] for s in written["skipped"]}
    assert reasons["jbig.tif"] == "unsupported compression JBIG"
    assert reasons["noisy.tif"].startswith("decoder error: Fax4Decode: Bad code word")
    assert f"skipped noisy.tif: {reasons['noisy.tif']}" in caplog.text
    assert "Fax4Decode" not in capfd.readouterr().err.replace(reasons["noisy.tif"], "")

    conversion.convert(output_dir=str(tmp_path / "kept"), images_dir=str(images),
                       labels=str(tmp_path / "pages.txt"), image_size=32, max_bad_fraction=0.5,
                       keep_decoder_errors=True, workers=0)
    kept = manifest.read_json(str(tmp_path / "kept" / "pages-manifest.json"))
    assert kept["num_records"] == 5
    assert [entry["path"] for entry in kept["kept_with_decoder_errors"]] == ["noisy.tif"]
    assert "Fax4Decode" in kept["kept_with_decoder_errors"][0]["messages"][0]


def test_decoder_messages_are_captured_and_sorted(capfd):
    import warnings
    with decode._captured_messages() as messages:  # pylint: disable=protected-access
        os.write(2, b"tempfile.tif: TIFFReadDirectory: Warning, Unknown field with tag 65000.\n")
        os.write(2, b"tempfile.tif: Fax4Decode: Bad code word at line 1 of strip 0.\n")
        warnings.warn("Possibly corrupt EXIF data")
        logging.getLogger("tifffile").warning("<TiffPage 0> invalid tag")
    assert sorted(messages.warnings()) == ["TIFFReadDirectory: Warning, Unknown field with tag 65000.",
                                   "warning: <TiffPage 0> invalid tag",
                                   "warning: Possibly corrupt EXIF data"]
    assert messages.errors() == ["Fax4Decode: Bad code word at line 1 of strip 0."]
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # fd 2 is restored, nothing leaked
