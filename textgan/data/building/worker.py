"""The per-image work of the shard builder, run in worker processes.

Kept apart from builder.py so that a freshly started ("spawn"/"forkserver") worker
imports only PIL and numpy, not torch or the feature models of the main process.
"""

from dataclasses import dataclass

from textgan.data.building.images import ImageSkip, encode_jpeg, process_image


@dataclass(frozen=True)
class ImageSettings:
    resolution: int
    crop: str
    quality: int
    draft: bool


@dataclass
class LoadedImage:
    image_id: int
    jpeg: bytes | None  # None when skipped
    width: int = 0
    height: int = 0
    reason: str | None = None  # why it was skipped


_settings: ImageSettings | None = None


def init_worker(settings: ImageSettings) -> None:
    """Pool initializer: the settings are sent once per worker, not once per image."""
    global _settings
    _settings = settings


def load_image(record) -> LoadedImage:
    """Record -> stored JPEG (COCO: read and resized; shapes: rendered), or the skip reason.
    Never raises for a bad image: the build must not crash on one file."""
    s = _settings
    try:
        if record.path is None:
            from textgan.data.sources.shapes import render_scene

            jpeg = encode_jpeg(render_scene(record.attributes, s.resolution), s.quality)
            return LoadedImage(record.image_id, jpeg, s.resolution, s.resolution)
        jpeg, width, height = process_image(record.path, s.resolution, mode=s.crop,
                                            quality=s.quality, draft=s.draft)
        return LoadedImage(record.image_id, jpeg, width, height)
    except ImageSkip as e:
        return LoadedImage(record.image_id, None, reason=e.reason)
    except MemoryError:
        return LoadedImage(record.image_id, None, reason="unreadable image: out of memory while decoding")
    except Exception as e:  # process_image promises ImageSkip only; this is the last line of defence
        return LoadedImage(record.image_id, None, reason=f"unreadable image: {type(e).__name__}: {e}")
