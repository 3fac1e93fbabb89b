"""What a stored sample's caption(s) and image id are, for textgan's shards and for shards indexed from other
tools: one rule for the loader (loading/samples.py) and `verify` (building/verify.py)."""

import hashlib

from textgan.data import format as fmt


def sample_image_id(meta: dict, key: str) -> int:
    """The image id of a sample: its json's image_id (textgan shards), else its key when that is a number
    (img2dataset's keys are: shard number + index), else a stable 63-bit hash of the key."""
    if "image_id" in meta:
        return int(meta["image_id"])
    name = key.rsplit("/", 1)[-1]
    if name.isdigit():
        return int(name)
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") >> 1


def sample_captions(meta: dict, raw: dict) -> list:
    """The captions of a sample: json "captions" (textgan shards), else the txt file (img2dataset, open_clip),
    else json "caption"."""
    if "captions" in meta:
        return list(meta["captions"])
    if fmt.KEY_TXT in raw:
        return [raw[fmt.KEY_TXT].decode("utf-8")]
    if isinstance(meta.get("caption"), str):
        return [meta["caption"]]
    return []
