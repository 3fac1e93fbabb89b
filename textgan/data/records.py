"""What a data source hands the shard builder: one Record per image, cheap metadata only.

Images are loaded (COCO: read from `path`; shapes: rendered from `attributes`) later,
in the builder's worker processes, so a Record must stay small and picklable.
"""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Record:
    image_id: int
    file_name: str
    captions: list  # normalized, non-empty strings
    split: str
    path: Optional[str] = None  # image file on disk (COCO); None for generated data
    attributes: Optional[dict] = None  # ground-truth scene (shapes); stored in the sample json
    extra: dict = field(default_factory=dict)


def skipped_entry(image_id, file_name, reason: str) -> dict:
    """The manifest's record of an image that was not written, and why."""
    return {"image_id": image_id, "file_name": file_name, "reason": reason}
