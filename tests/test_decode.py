"""textgan.data.decode: the pixels are those of a plain PIL decode (Image.open(...).convert("RGB")), bit for bit,
whichever way an image is decoded (a plain JPEG straight through PIL's JPEG decoder, anything else through
Image.open), and an image one of them refuses the other refuses too."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from textgan.data.decode import _plain_jpeg_size, decode_jpeg, decode_jpeg_into


def plain_pil(data: bytes, fit_to=None) -> np.ndarray:
    """The reference: how decode_jpeg decoded before it had a direct path for plain JPEGs."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        if fit_to is not None and rgb.size != (fit_to, fit_to):
            rgb = ImageOps.fit(rgb, (fit_to, fit_to), method=Image.Resampling.LANCZOS)
        return np.asarray(rgb, dtype=np.uint8).copy()


def noise_image(size, mode="RGB", seed=0) -> Image.Image:
    """Smooth shapes plus noise: every block of the JPEG carries detail, so any decoding difference shows."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 7 + y * 3) % 256, (x * y) % 256, (x * 2 - y * 5) % 256], axis=-1)
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def encoded(img: Image.Image, fmt="JPEG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


PLAIN_JPEGS = {
    "64px q95": dict(size=(64, 64), quality=95),
    "256px q90": dict(size=(256, 256), quality=90),
    "1x1": dict(size=(1, 1)),
    "odd 17x9": dict(size=(17, 9)),
    "4:4:4": dict(size=(48, 40), subsampling=0),
    "4:2:2": dict(size=(48, 40), subsampling=1),
    "4:2:0": dict(size=(48, 40), subsampling=2),
    "progressive": dict(size=(80, 56), progressive=True),
    "optimized": dict(size=(80, 56), optimize=True),
    "restart markers": dict(size=(80, 56), restart_marker_blocks=2),
    "exif, icc, comment": dict(size=(32, 32), exif=Image.Exif().tobytes(), icc_profile=b"x" * 300,
                               comment=b"a comment"),
    # bigger than ImageFile's read block (64 KiB): Image.open decodes it in several chunks
    "700x500 q100": dict(size=(700, 500), quality=100),
}


@pytest.mark.parametrize("name", list(PLAIN_JPEGS))
def test_plain_jpegs_decode_to_the_pixels_of_a_plain_pil_decode(name):
    options = dict(PLAIN_JPEGS[name])
    size = options.pop("size")
    data = encoded(noise_image(size), **options)
    assert _plain_jpeg_size(data) == size  # decoded on the direct path
    expected = plain_pil(data)
    got = decode_jpeg(data)
    assert got.dtype == np.uint8 and got.shape == (size[1], size[0], 3) and got.flags.writeable
    assert np.array_equal(got, expected)
    out = np.zeros((size[1], size[0], 3), np.uint8)
    assert decode_jpeg_into(data, out) == size
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("name, data", [
    ("greyscale JPEG", encoded(noise_image((40, 30), "L"))),
    ("CMYK JPEG", encoded(noise_image((40, 30), "CMYK"))),
    ("RGBA PNG", encoded(noise_image((40, 30), "RGBA"), "PNG")),
    ("palette PNG", encoded(noise_image((40, 30), "P"), "PNG")),
    ("RGB PNG", encoded(noise_image((40, 30)), "PNG")),
])
def test_other_images_go_through_image_open_with_the_same_pixels(name, data):
    assert _plain_jpeg_size(data) is None
    assert np.array_equal(decode_jpeg(data), plain_pil(data))


def test_fitting_to_a_resolution_matches_the_plain_decode():
    data = encoded(noise_image((90, 60)), quality=92)
    expected = plain_pil(data, fit_to=32)
    assert np.array_equal(decode_jpeg(data, 32), expected)
    out = np.zeros((32, 32, 3), np.uint8)
    assert decode_jpeg_into(data, out, 32) == (32, 32)
    assert np.array_equal(out, expected)


def test_decoding_into_an_array_of_another_size_leaves_it_alone_and_says_the_size():
    data = encoded(noise_image((20, 10)))
    out = np.full((16, 16, 3), 7, np.uint8)
    assert decode_jpeg_into(data, out) == (20, 10)
    assert np.all(out == 7)


def outcome(decode, data):
    """The pixels, or "refused" when the decode raises."""
    try:
        return decode(data)
    except Exception:
        return "refused"


def flipped(data: bytes, *positions) -> bytes:
    damaged = bytearray(data)
    for i in positions:
        damaged[i] ^= 0x55
    return bytes(damaged)


@pytest.mark.parametrize("damage", ["truncated", "cut at the end", "garbage in the scan", "flipped bits in the scan",
                                    "flipped bits near the end", "not an image", "empty"])
def test_damaged_images_are_refused_or_decoded_exactly_as_a_plain_decode_does(damage):
    data = encoded(noise_image((64, 64)), quality=95)
    bad = {
        "truncated": data[: len(data) // 2],
        "cut at the end": data[:-2],  # no end-of-image marker
        "garbage in the scan": data[:700] + bytes(range(256)) * 4 + data[1724:],
        "flipped bits in the scan": flipped(data, 2000, 2040),  # libjpeg decodes these, with wrong pixels
        "flipped bits near the end": flipped(data, 4000, 4040),
        "not an image": b"this is not an image at all" * 10,
        "empty": b"",
    }[damage]
    expected = outcome(plain_pil, bad)
    got = outcome(decode_jpeg, bad)
    if isinstance(expected, str):
        assert got == expected
    else:
        assert np.array_equal(got, expected)
    out = np.zeros((64, 64, 3), np.uint8)
    into = outcome(lambda d: decode_jpeg_into(d, out), bad)
    assert into == expected if isinstance(expected, str) else np.array_equal(out, expected)


def test_frame_header_reading_declines_odd_layouts():
    data = encoded(noise_image((24, 16)))
    assert _plain_jpeg_size(data) == (24, 16)
    assert _plain_jpeg_size(data[:2] + b"\xff\xda" + data[2:]) is None  # a scan before any frame header
    assert _plain_jpeg_size(data[:2] + b"\x00" + data[2:]) is None  # junk between markers
    assert _plain_jpeg_size(data[:20]) is None  # cut before the frame header
    assert _plain_jpeg_size(b"\x89PNG\r\n\x1a\n") is None
