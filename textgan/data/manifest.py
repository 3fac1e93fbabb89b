"""Reading (and, in the builder, writing) a shard directory's manifest.json."""

import json
import os

from textgan.data import format as fmt
from textgan.errors import UsageError


def manifest_path(out_dir: str) -> str:
    return os.path.join(out_dir, fmt.MANIFEST_NAME)


def load_manifest(out_dir: str) -> dict:
    """The manifest of a finished shard directory; UsageError (exit 2) when there is none."""
    path = manifest_path(out_dir)
    if not os.path.isfile(path):
        raise UsageError(
            f"{out_dir} has no {fmt.MANIFEST_NAME}: it is not a finished shard directory. "
            f"Build it with `python shards/build.py shapes|coco --out {out_dir} ...` "
            "(an interrupted build finishes when rerun with the same command)."
        )
    try:
        with open(path) as f:
            manifest = json.load(f)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e}); rebuild the shards or restore the file.") from e
    if manifest.get("format") != fmt.FORMAT_NAME:
        raise UsageError(f"{path} is not a textgan shard manifest (format={manifest.get('format')!r}).")
    return manifest
