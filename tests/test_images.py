"""textgan.data.building.images: every file COCO (or a hostile folder) holds -> square RGB JPEG or a reasoned skip."""

import io
import struct
import time
import zlib

import numpy as np
import pytest
from coco_fixture import (
    CASES,
    CMYK_RGB,
    EXIF_BACKGROUND,
    EXIF_CORNER,
    EXIF_HALF,
    PNG_OPAQUE,
    coco_file_name,
    make_coco_fixture,
)
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin

from textgan.data.building import images
from textgan.data.decode import decode_jpeg
from textgan.data.building.images import ImageSkip, encode_jpeg, load_rgb, process_image, resize_square


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_fixture(tmp_path_factory.mktemp("coco"))


def _path(coco, split, image_id):
    return f"{coco['root']}/{split}2014/{coco_file_name(split, image_id)}"


def _decoded(data: bytes) -> np.ndarray:
    """Pixels of stored bytes, after checking they really are an RGB JPEG."""
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.mode) == ("JPEG", "RGB")
    return decode_jpeg(data).astype(np.int16)


def _mean(pixels, rows, cols):
    return pixels[rows, cols].reshape(-1, 3).mean(axis=0)


def _close(colour, expected, tol=12):
    return np.all(np.abs(np.asarray(colour, float) - np.asarray(expected, float)) <= tol)


def _encode(img, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


# ---------------------------------------------------------------- the fixture's cases


@pytest.mark.parametrize("mode", ["center", "pad"])
@pytest.mark.parametrize("draft", [True, False])
def test_every_kept_image_becomes_an_exact_square_rgb_jpeg(coco, mode, draft):
    kept = [("train", i) for i in coco["train"]["good_ids"]] + [("val", i) for i in coco["val"]["good_ids"]]
    assert len(kept) == 20 and CASES["cmyk"] in coco["train"]["good_ids"]
    for split, image_id in kept:
        data, width, height = process_image(_path(coco, split, image_id), 24, mode=mode, draft=draft)
        assert _decoded(data).shape == (24, 24, 3), (split, image_id)
        assert (width, height) == coco[split]["sizes"][image_id], (split, image_id)


def test_every_bad_file_is_skipped_with_its_exact_reason(coco):
    expected = {("train", i): r for i, r in coco["train"]["skip_image"].items()}
    expected.update({("val", i): r for i, r in coco["val"]["skip_image"].items()})
    assert set(expected.values()) == {"empty file", "truncated image", "not an image", "file missing"}
    for (split, image_id), reason in expected.items():
        for draft in (True, False):
            with pytest.raises(ImageSkip) as skip:
                process_image(_path(coco, split, image_id), 24, draft=draft)
            assert skip.value.reason == reason, (split, image_id)


def test_bytes_sources_behave_like_paths(coco):
    for image_id in (CASES["truncated"], CASES["not_image"]):
        with open(_path(coco, "train", image_id), "rb") as f:
            data = f.read()
        with pytest.raises(ImageSkip) as skip:
            load_rgb(data)
        assert skip.value.reason == coco["train"]["skip_image"][image_id]
    with pytest.raises(ImageSkip, match="empty file"):
        load_rgb(b"")
    with open(_path(coco, "train", CASES["gray"]), "rb") as f:
        from_bytes = process_image(f.read(), 24)
    assert from_bytes == process_image(_path(coco, "train", CASES["gray"]), 24)


def test_truncated_file_really_is_a_jpeg_cut_short(coco):
    """Guards the fixture: the case must reach the decoder, not fail as 'not an image'."""
    with open(_path(coco, "train", CASES["truncated"]), "rb") as f:
        assert f.read(3) == b"\xff\xd8\xff"
    with Image.open(_path(coco, "train", CASES["truncated"])) as img:
        assert img.size == (80, 80)


def test_truncated_rejected_even_when_another_library_enabled_truncated_loading(coco, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageSkip) as skip:
        load_rgb(_path(coco, "train", CASES["truncated"]))
    assert skip.value.reason == "truncated image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_exif_orientation_swaps_size_and_rotates_pixels(coco):
    img, size = load_rgb(_path(coco, "train", CASES["exif_rotated"]))
    assert size == (40, 60) and img.size == (40, 60) and img.mode == "RGB"
    pixels = np.asarray(img, dtype=np.int16)
    # Stored: red top half, green top-left corner. Orientation 6 = 90 degrees clockwise,
    # so red is the right half and green the top-right corner; no rotation or the wrong
    # one (8, 5, 7) puts them elsewhere.
    assert _close(_mean(pixels, slice(20, 60), slice(24, 38)), EXIF_HALF)
    assert _close(_mean(pixels, slice(0, 60), slice(2, 16)), EXIF_BACKGROUND)
    assert _close(_mean(pixels, slice(1, 8), slice(32, 39)), EXIF_CORNER)

    # Through the whole pipeline: pad at 60 keeps the 40x60 content unscaled at x 10..50.
    data, width, height = process_image(_path(coco, "train", CASES["exif_rotated"]), 60, mode="pad")
    out = _decoded(data)
    assert (width, height) == (40, 60)
    assert _close(_mean(out, slice(20, 60), slice(34, 48)), EXIF_HALF)
    assert _close(_mean(out, slice(0, 60), slice(12, 26)), EXIF_BACKGROUND)
    assert _close(_mean(out, slice(1, 8), slice(42, 49)), EXIF_CORNER)
    assert out[:, :8].max() <= 10  # black padding left of the content


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_orientations_match_pil_exif_transpose(orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(pixels), "PNG", exif=exif.tobytes())  # lossless: exact comparison
    img, size = load_rgb(data)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert np.array_equal(np.asarray(img), np.asarray(expected.convert("RGB")))
    assert size == expected.size == ((4, 6) if orientation >= 5 else (6, 4))


def test_cmyk_and_grayscale_become_plausible_rgb(coco):
    cmyk, _ = load_rgb(_path(coco, "train", CASES["cmyk"]))
    assert cmyk.mode == "RGB" and _close(np.asarray(cmyk).reshape(-1, 3).mean(0), CMYK_RGB, tol=6)

    data, width, height = process_image(_path(coco, "train", CASES["gray"]), 32)
    gray = _decoded(data)
    assert (width, height) == (64, 48)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 3 and np.abs(gray[..., 1] - gray[..., 2]).max() <= 3
    # The horizontal gradient survives: the center crop spans grey 0..255 columns 8..56.
    assert gray[:, :3].mean() < 60 and gray[:, -3:].mean() > 195


def test_png_behind_jpg_name_with_alpha_is_composited_on_white(coco):
    img, size = load_rgb(_path(coco, "train", CASES["png_as_jpg"]))
    pixels = np.asarray(img, dtype=np.int16)
    assert size == (40, 40) and img.mode == "RGB"
    assert _close(_mean(pixels, slice(None), slice(0, 18)), PNG_OPAQUE, tol=1)
    assert _close(_mean(pixels, slice(None), slice(22, 40)), (255, 255, 255), tol=1)


def test_tiny_and_extreme_aspect_images(coco):
    for image_id, size in ((CASES["tiny"], (3, 2)), (CASES["extreme_aspect"], (400, 4))):
        for mode in ("center", "pad"):
            data, width, height = process_image(_path(coco, "train", image_id), 32, mode=mode)
            assert _decoded(data).shape == (32, 32, 3) and (width, height) == size
    # Pad: the 400x4 strip becomes 32x1 in the middle row; everything far from it is black.
    out = _decoded(process_image(_path(coco, "train", CASES["extreme_aspect"]), 32, mode="pad")[0])
    assert out[:10].max() <= 8 and out[22:].max() <= 8 and out[15:17].max() > 30
    # Center: the 4 px tall strip is scaled up to cover the whole square; no black rows.
    out = _decoded(process_image(_path(coco, "train", CASES["extreme_aspect"]), 32, mode="center")[0])
    assert out.max(axis=(1, 2)).min() > 30


# ---------------------------------------------------------------- modes, resize, encode


def _two_halves(mode, left, right, size=(20, 10)):
    img = Image.new(mode, size, left)
    img.paste(Image.new(mode, (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return img


@pytest.mark.parametrize(
    "name, make, fmt, left, right",
    [
        ("L", lambda: _two_halves("L", 40, 200), "PNG", (40,) * 3, (200,) * 3),
        ("LA", lambda: _two_halves("LA", (40, 255), (40, 0)), "PNG", (40,) * 3, (255,) * 3),
        ("RGBA", lambda: _two_halves("RGBA", (10, 200, 30, 255), (10, 200, 30, 0)), "PNG", (10, 200, 30), (255,) * 3),
        ("P", lambda: _two_halves("RGB", (10, 200, 30), (250, 20, 20)).quantize(4), "PNG", (10, 200, 30), (250, 20, 20)),
        ("P+transparency", lambda: _two_halves("P", 0, 1), "PNG-T", (10, 200, 30), (255,) * 3),
        ("1", lambda: _two_halves("1", 0, 1), "PNG", (0,) * 3, (255,) * 3),
        ("I;16", lambda: _two_halves("I;16", 0, 65535), "PNG", (0,) * 3, (255,) * 3),
        ("CMYK", lambda: _two_halves("RGB", (10, 200, 30), (250, 20, 20)).convert("CMYK"), "TIFF", (10, 200, 30), (250, 20, 20)),
        ("YCbCr", lambda: _two_halves("RGB", (10, 200, 30), (250, 20, 20)).convert("YCbCr"), "JPEG", (10, 200, 30), (250, 20, 20)),
    ],
)
def test_any_mode_converts_to_rgb(name, make, fmt, left, right):
    img = make()
    if fmt == "PNG-T":  # palette with index 1 declared transparent
        img.putpalette([10, 200, 30, 99, 99, 99])
        data = _encode(img, "PNG", transparency=1)
    else:
        data = _encode(img, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    out, size = load_rgb(data)
    pixels = np.asarray(out, dtype=np.int16)
    assert out.mode == "RGB" and size == (20, 10)
    tol = 8 if fmt == "JPEG" else 2
    assert _close(_mean(pixels, slice(None), slice(0, 8)), left, tol), name
    assert _close(_mean(pixels, slice(None), slice(12, 20)), right, tol), name


def test_center_crop_keeps_the_middle_and_pad_adds_black_bars():
    strip = Image.new("RGB", (90, 30), (255, 0, 0))
    strip.paste(Image.new("RGB", (30, 30), (0, 255, 0)), (30, 0))
    strip.paste(Image.new("RGB", (30, 30), (0, 0, 255)), (60, 0))
    center = np.asarray(resize_square(strip, 16, "center"), dtype=np.int16)
    assert center.shape == (16, 16, 3) and _close(_mean(center, slice(2, 14), slice(2, 14)), (0, 255, 0), tol=3)
    pad = np.asarray(resize_square(strip, 30, "pad"), dtype=np.int16)  # content 30x10 at rows 10..20
    assert pad.shape == (30, 30, 3)
    assert pad[:10].max() == 0 and pad[20:].max() == 0
    assert _close(_mean(pad, slice(11, 19), slice(12, 18)), (0, 255, 0), tol=3)


@pytest.mark.parametrize("size", [(1, 1), (1000, 1), (1, 1000), (2, 3)])
@pytest.mark.parametrize("mode", ["center", "pad"])
def test_resize_handles_degenerate_shapes(size, mode):
    out = resize_square(Image.new("RGB", size, (90, 160, 220)), 17, mode)
    assert out.size == (17, 17) and out.mode == "RGB"
    pixels = np.asarray(out, dtype=np.int16)
    assert _close(pixels[8, 8], (90, 160, 220), tol=2)  # the centre always shows the image


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="crop mode"):
        resize_square(Image.new("RGB", (4, 4)), 8, "stretch")
    with pytest.raises(ValueError, match="resolution"):
        resize_square(Image.new("RGB", (4, 4)), 0)
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(Image.new("RGB", (4, 4)), quality=0)


def test_encoding_is_deterministic_444_and_quality_matters(coco):
    path = _path(coco, "train", 6)
    first, second = process_image(path, 32), process_image(path, 32)
    assert first == second
    img = Image.open(io.BytesIO(first[0]))
    assert JpegImagePlugin.get_sampling(img) == 0  # 4:4:4, no chroma subsampling
    assert encode_jpeg(img.convert("RGB"), 95) == encode_jpeg(img.convert("RGB"), 95)
    assert len(process_image(path, 32, quality=50)[0]) < len(first[0])


# ---------------------------------------------------------------- guards


def _png_header_only(width, height) -> bytes:
    """A PNG whose IHDR claims width x height; opening it reads just the header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_with_a_clear_reason(monkeypatch):
    with pytest.raises(ImageSkip) as skip:
        load_rgb(_png_header_only(100_000, 100_000))  # 10 Gpixel claimed by a 60-byte file
    assert skip.value.reason.startswith("image too large (decompression bomb guard)")
    # Our own limit applies below PIL's (which only warns up to twice its value).
    monkeypatch.setattr(images, "MAX_PIXELS", 300)
    with pytest.raises(ImageSkip) as skip:
        load_rgb(_encode(Image.new("RGB", (20, 20))))
    assert "20x20 pixels > 300" in skip.value.reason


def test_directories_and_garbage_never_raise_pil_errors(tmp_path):
    with pytest.raises(ImageSkip, match="not an image"):
        load_rgb(str(tmp_path))
    with pytest.raises(ImageSkip, match="file missing"):
        load_rgb(str(tmp_path / "nope.jpg"))
    with pytest.raises(ImageSkip) as skip:  # a JPEG signature followed by garbage
        load_rgb(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    assert skip.value.reason == "not an image"


def test_corrupt_png_stream_is_rejected_even_though_png_exif_reading_decodes():
    """PNG's getexif() decodes the image; a decode error there must not be swallowed
    and leave a half-decoded image that passes a second load()."""
    noise = np.random.default_rng(0).integers(0, 256, size=(30, 30, 3), dtype=np.uint8)
    data = bytearray(_encode(Image.fromarray(noise), "PNG"))
    data[data.index(b"IDAT") + 4] ^= 0xFF  # break the zlib header of the pixel stream
    with pytest.raises(ImageSkip) as skip:
        load_rgb(bytes(data))
    assert skip.value.reason == "unreadable image: broken data stream when reading image file"


def test_output_verification_rejects_bytes_that_do_not_decode_to_the_promised_square():
    good = encode_jpeg(Image.new("RGB", (8, 8), (1, 2, 3)))
    images._verify_jpeg(good, 8)
    for data, resolution in ((good[: len(good) // 2], 8), (good, 9), (_encode(Image.new("RGB", (8, 8))), 8)):
        with pytest.raises(ImageSkip, match="^unreadable image: re-encoded JPEG"):
            images._verify_jpeg(data, resolution)


# ---------------------------------------------------------------- draft decoding


def _large_jpeg(size=(1024, 768)) -> bytes:
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack(
        [
            128 + 100 * np.sin(x / 90.0) * np.cos(y / 70.0),
            128 + 90 * np.cos((x + y) / 120.0),
            x / width * 255,
        ],
        axis=-1,
    )
    pixels[300:420, 400:560] = (230, 40, 60)  # an object with hard edges
    return _encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "JPEG", quality=92)


def test_draft_decoding_matches_full_decoding_closely():
    data = _large_jpeg()
    img, size = load_rgb(data, draft_size=64)
    assert size == (1024, 768)  # from the header, not from the reduced decode
    assert img.size == (128, 96)  # libjpeg decoded at 1/8 scale: short side 96 >= 64
    for draft_size in (32, 64, 100, 200, 384, 500, 768, 2000):
        reduced, _ = load_rgb(data, draft_size=draft_size)
        assert min(reduced.size) >= min(draft_size, 768), draft_size

    timings = {}
    outputs = {}
    for draft in (True, False):
        start = time.perf_counter()
        for _ in range(3):
            outputs[draft] = process_image(data, 64, draft=draft)
        timings[draft] = (time.perf_counter() - start) / 3
    fast, full = _decoded(outputs[True][0]), _decoded(outputs[False][0])
    assert fast.shape == full.shape == (64, 64, 3)
    assert outputs[True][1:] == outputs[False][1:] == (1024, 768)
    mean_abs_diff = np.abs(fast - full).mean()
    assert mean_abs_diff < 3.0, mean_abs_diff
    print(f"\n1024x768 -> 64: draft {timings[True] * 1e3:.1f} ms, full {timings[False] * 1e3:.1f} ms, "
          f"mean |diff| {mean_abs_diff:.2f}")


def test_draft_with_exif_rotation_reports_the_upright_original_size():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.new("RGB", (400, 200), (20, 120, 220)), "JPEG", exif=exif.tobytes())
    img, size = load_rgb(data, draft_size=32)
    assert size == (200, 400)
    assert img.size == (50, 100)  # 1/4 scale (1/8 would make the short side 25 < 32), then rotated


def test_the_builder_workers_decode_without_importing_torch():
    """A builder worker imports only PIL and numpy (textgan.data.building.worker), though it checks what it
    writes with the loader's decoder: a fresh worker process starts in well under a second."""
    import subprocess
    import sys

    code = ("import sys, textgan.data.building.worker, textgan.data.decode; "
            "print(sorted(m for m in ('torch', 'open_clip', 'webdataset') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
