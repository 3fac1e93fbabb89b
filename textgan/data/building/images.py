"""Any image file -> a clean square RGB JPEG, or an ImageSkip saying why not.

The shard builder's workers call process_image() on every COCO file. Whatever the
file holds (grayscale, CMYK, PNG behind a .jpg name, EXIF-rotated, 3x2 pixels,
1000:1, empty, truncated, text), the result is either JPEG bytes that are known to
decode at resolution x resolution, or an ImageSkip with a short, stable reason that
the manifest records. No PIL error or OSError escapes.
"""

import contextlib
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from textgan.data import format as fmt
from textgan.data.decode import decode_rgb

# Decompression-bomb guard. PIL's own limit (Image.MAX_IMAGE_PIXELS) only warns up to
# twice its value, and the warning would be lost in a worker process; we refuse above
# this explicitly. COCO images are at most 640x640; 89 Mpixel (PIL's default) leaves
# room for any real photo while refusing a crafted header that would allocate gigabytes.
MAX_PIXELS = 89_478_485

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the image upright (the table of
# ImageOps.exif_transpose). Applied directly because exif_transpose also rewrites the
# EXIF block, which raises on some malformed camera EXIF, and we discard EXIF anyway.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATIONS_SWAPPING_AXES = (5, 6, 7, 8)  # transpose / rotate by 90 or 270 degrees
_WHITE = (255, 255, 255)
_PAD_COLOUR = (0, 0, 0)
# Resize with reducing_gap: PIL first shrinks by an integer factor (Image.reduce, a box
# filter), then applies LANCZOS for the last >= 3x; PIL documents a gap >= 3.0 as
# "indistinguishable from fair resampling in most cases", and it is much faster on big
# downscales (full-size decodes of 640 px COCO images to 64 px).
_REDUCING_GAP = 3.0


class ImageSkip(Exception):
    """An image that cannot become a sample; `.reason` goes into the manifest's skipped list."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@contextlib.contextmanager
def _reject_truncated_images():
    """Force PIL to raise on truncated files while we decode.

    With LOAD_TRUNCATED_IMAGES=True PIL pads a cut-off JPEG with grey and calls it fine;
    the sample would look valid but be garbage. Some libraries flip this global on
    import, so we pin it to False for the duration of the decode and restore it after.
    (Builder workers are processes, so the brief global change cannot race a thread.)
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _open_source(source):
    """A readable binary file object for a path or bytes; ImageSkip for missing/empty."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageSkip("empty file")
        return io.BytesIO(bytes(source))
    path = os.fspath(source)
    try:
        if os.path.getsize(path) == 0:
            raise ImageSkip("empty file")
        return open(path, "rb")
    except FileNotFoundError:
        raise ImageSkip("file missing") from None
    except IsADirectoryError:
        raise ImageSkip("not an image") from None
    except OSError as e:  # permissions, I/O errors: the file exists but cannot be read
        raise ImageSkip(f"unreadable image: {e.strerror or e}") from None


def _orientation(img: Image.Image) -> int:
    """EXIF orientation (1..8); 1 when absent or when the EXIF block itself is broken
    (broken metadata is no reason to lose the pixels)."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited on white (what a viewer shows);
    16/32-bit grey is scaled from its 16-bit range instead of being clipped to white."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):  # I;16, I;16B, I (32-bit), as 16-bit PNG/TIFF open
        # PIL's direct conversion clips at 255, turning almost every 16-bit pixel white;
        # map the 16-bit range onto 8 bits instead.
        grey = np.clip(np.asarray(img, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(source, draft_size: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode `source` (path or bytes) fully into an upright RGB image.

    Returns (image, (width, height)) where the size is the ORIGINAL one after EXIF
    orientation, even when draft decoding returned a smaller image. With draft_size,
    JPEGs are decoded by libjpeg at 1/2, 1/4 or 1/8 scale, but never below draft_size
    on either side, so a later center crop at that resolution never upsamples.
    Raises ImageSkip for anything that is not a decodable image.
    """
    with _open_source(source) as fp, _reject_truncated_images(), warnings.catch_warnings():
        # Between 1x and 2x MAX_IMAGE_PIXELS PIL only warns; make it an error we can report.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
        except UnidentifiedImageError:
            raise ImageSkip("not an image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageSkip(f"image too large (decompression bomb guard): {e}") from None
        except Exception as e:  # a recognised format whose header is broken
            raise ImageSkip(_reason_for(e)) from None
        with img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageSkip(
                    f"image too large (decompression bomb guard): {width}x{height} pixels > {MAX_PIXELS}"
                )
            try:
                if draft_size:
                    # No-op for non-JPEG formats. Requesting a square keeps BOTH sides >=
                    # draft_size, which covers center-crop (short side) and pad (long side).
                    img.draft("RGB", (int(draft_size), int(draft_size)))
                # Decode now: truncation must surface here, not in a later reader. Before
                # reading EXIF: for PNG, getexif() itself decodes, and a decode error
                # swallowed there would leave a half-decoded image that a second load()
                # silently accepts.
                img.load()
                orientation = _orientation(img)
                if orientation in _UPRIGHT:
                    img = img.transpose(_UPRIGHT[orientation])
                rgb = _to_rgb(img)
            except Exception as e:
                raise ImageSkip(_reason_for(e)) from None
    if orientation in _ORIENTATIONS_SWAPPING_AXES:
        width, height = height, width
    return rgb, (width, height)


def _reason_for(error: Exception) -> str:
    message = str(error) or type(error).__name__
    if "truncated" in message.lower():
        return "truncated image"
    return f"unreadable image: {message}"


def resize_square(img: Image.Image, resolution: int, mode: str = "center") -> Image.Image:
    """Square `resolution` x `resolution` version of `img`.

    "center": scale the short side to `resolution` and keep the central square.
    "pad":    scale the long side to `resolution` and pad the rest with black.
    The center crop is done by resizing straight from the source's central square
    (resize(box=...)), so a 1000:1 image never materialises a huge intermediate.
    """
    if mode not in fmt.CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; expected one of {fmt.CROP_MODES}")
    resolution = int(resolution)
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    width, height = img.size
    if mode == "center":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        return img.resize(
            (resolution, resolution),
            Image.Resampling.LANCZOS,
            box=(left, top, left + side, top + side),
            reducing_gap=_REDUCING_GAP,
        )
    scale = resolution / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = img.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
    canvas = Image.new(img.mode, (resolution, resolution), _PAD_COLOUR if img.mode == "RGB" else 0)
    canvas.paste(resized, ((resolution - new_size[0]) // 2, (resolution - new_size[1]) // 2))
    return canvas


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    """RGB baseline JPEG bytes; same image and quality -> same bytes.

    subsampling=0 (4:4:4): at 64-256 px, 4:2:0 halves the colour resolution of objects
    that are only a few pixels wide (coloured shapes, small COCO objects), smearing
    their colour into the background; the generator would learn that blur. It costs
    ~20-30% more bytes, which is small at these sizes. No EXIF/ICC/comment is written
    and no progressive/optimize passes are used, so the output depends only on pixels,
    quality and the libjpeg build.
    """
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def _verify_jpeg(data: bytes, resolution: int) -> None:
    """The promise "never a sample that fails to decode later", checked on the bytes we ship with the loader's
    own decoder (textgan.data.decode: a plain JPEG skips Image.open's header parsing in Python, ~50 us an
    image, as much as the rest of this check at 64 px)."""
    try:
        with _reject_truncated_images():
            width, height = decode_rgb(data).size  # decoded in full; no array of it is needed
    except Exception as e:
        raise ImageSkip(f"unreadable image: re-encoded JPEG does not decode ({e})") from None
    if not data.startswith(b"\xff\xd8\xff"):  # JPEG's start-of-image marker: what a .jpg member must hold
        raise ImageSkip("unreadable image: re-encoded JPEG is not a JPEG")
    if (width, height) != (resolution, resolution):
        raise ImageSkip("unreadable image: re-encoded JPEG has the wrong size")


def process_image(
    source, resolution: int, mode: str = "center", quality: int = 95, draft: bool = True
) -> tuple[bytes, int, int]:
    """load_rgb + resize_square + encode_jpeg -> (jpeg bytes, original width, original height).

    The returned bytes have been decoded once more here, so a shard never holds a sample
    that fails to decode. Raises ImageSkip (never a PIL error) for unusable sources.
    """
    img, (width, height) = load_rgb(source, draft_size=resolution if draft else None)
    data = encode_jpeg(resize_square(img, resolution, mode), quality)
    _verify_jpeg(data, resolution)
    return data, width, height
