"""Decoding stored samples into tensors: shared by the loader, the feature precompute and the shard builder's
check of what it writes, so that all of them see the same pixels.

torch is imported only where a tensor is made (to_float_image): the shard builder's worker processes decode
with this module and import only PIL and numpy (a fresh worker starts in well under a second)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Optional

import numpy as np
from PIL import Image, ImageFile, ImageOps

if TYPE_CHECKING:
    import torch

# Start-of-frame markers (0xC0-0xCF but DHT 0xC4, JPG 0xC8 and DAC 0xCC): where a JPEG states its size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Segments that may come before the frame header: tables (DHT, DAC, DQT, DRI), DNL, DHP, EXP, APPn, JPGn, COM.
# Anything else there (RSTn, SOI, EOI, SOS, stuffed zero bytes) is an odd layout, left to Image.open.
_BEFORE_FRAME = frozenset({0xC4, 0xC8, 0xCC, *range(0xDB, 0xE0), *range(0xE0, 0xFF)})


def _plain_jpeg_size(data: bytes) -> Optional[tuple]:
    """(width, height) of a JPEG with three 8-bit components, from its frame header; None for anything else
    (other formats, greyscale or CMYK JPEGs, 12-bit samples, an odd marker layout)."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            if pos + 10 > end or data[pos + 4] != 8 or data[pos + 9] != 3:
                return None
            height, width = (data[pos + 5] << 8) | data[pos + 6], (data[pos + 7] << 8) | data[pos + 8]
            return (width, height) if width and height else None
        if marker not in _BEFORE_FRAME:
            return None
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def decode_rgb(data: bytes) -> Image.Image:
    """The image in `data`, decoded, RGB.

    A plain JPEG (three 8-bit components) is decoded by PIL's JPEG decoder straight from the bytes
    (Image.frombytes with the "jpeg" decoder and the arguments Image.open gives it for such a file:
    rawmode "RGB", no colour-space override), which gives the same pixels as Image.open(...).load()
    without its marker parsing in Python (~50 us an image, a third of decoding a 64 px JPEG;
    tests/test_decode.py checks the pixels are identical). Everything else, and any image that
    Image.open treats specially (over MAX_IMAGE_PIXELS; LOAD_TRUNCATED_IMAGES set), goes through Image.open."""
    size = None if ImageFile.LOAD_TRUNCATED_IMAGES else _plain_jpeg_size(data)
    limit = Image.MAX_IMAGE_PIXELS
    if size is not None and (limit is None or size[0] * size[1] <= limit):
        return Image.frombytes("RGB", size, data, "jpeg", "RGB", "")
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")  # a new image (of an RGB one, a copy), still valid once img is closed


def _fitted(rgb: Image.Image, fit_to: Optional[int]) -> Image.Image:
    if fit_to is not None and rgb.size != (fit_to, fit_to):
        rgb = ImageOps.fit(rgb, (fit_to, fit_to), method=Image.Resampling.LANCZOS)
    return rgb


def decode_jpeg(data: bytes, fit_to: Optional[int] = None) -> np.ndarray:
    """JPEG (or any PIL-readable) bytes -> uint8 array [H, W, 3], RGB. fit_to=R: an image that is not
    R x R is center-cropped to a square and resized to R x R (Lanczos), as shards indexed from other
    tools may hold any size; one that is R x R is returned as stored."""
    return np.array(_fitted(decode_rgb(data), fit_to), dtype=np.uint8)


def decode_jpeg_into(data: bytes, out: np.ndarray, fit_to: Optional[int] = None) -> tuple:
    """decode_jpeg written into `out` (uint8 [H, W, 3], e.g. a row of a batch being built) instead of a
    new array, which saves the loader a copy of every image (stacking rows into a batch). Returns the
    decoded image's (width, height); `out` is written only when that is its size, else left as it was."""
    rgb = _fitted(decode_rgb(data), fit_to)
    if rgb.size == (out.shape[1], out.shape[0]):
        out[...] = np.asarray(rgb)  # np.asarray: the bytes PIL packs, read-only; copied once, into out
    return rgb.size


def to_float_image(pixels) -> torch.Tensor:
    """uint8 [H, W, 3] (numpy or tensor) or a stack [B, H, W, 3] -> float32 [.., 3, H, W] in [-1, 1]."""
    import torch

    t = torch.as_tensor(pixels)
    t = t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.to(torch.float32).div_(127.5).sub_(1.0)
