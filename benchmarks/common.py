"""Test data the benchmarks share: a COCO-2014-style folder of photo-sized JPEGs."""

import os
import tempfile

from textgan.data.sources.shapes import write_coco_layout

CACHE = os.path.join(tempfile.gettempdir(), "textgan-bench-cache")


def coco_like_folder(n: int, size: int = 512) -> str:
    """A COCO-2014 layout of n shapes images at `size` px (COCO photos are ~640x480, so
    decoding cost is in the same range). Made once and kept in the temp dir, since making
    it takes longer than some of the measurements."""
    root = os.path.join(CACHE, f"coco-{n}-{size}")
    marker = os.path.join(root, ".complete")
    if not os.path.exists(marker):
        write_coco_layout(root, n, seed=0, split="train", size=size, quality=90)
        open(marker, "w").close()
    return root
