"""Writing one shard so that it is either completely there or not there at all.

Protocol (what makes kill -9, disk full and resume safe):
  1. the tar is written to NAME.tar.tmp, flushed and fsync'ed;
  2. its sha256 is computed and the shard record NAME.tar.record.json
     ({name, samples, sha256, size, image_ids, skipped}) is written atomically;
  3. NAME.tar.tmp is renamed to NAME.tar.
A shard is done when its tar and its record exist and the tar's size matches the
record. A kill between 2 and 3 leaves a record without tar: not done, redone.
Leftover *.tmp files are never done and are deleted when a build starts (building/outdir.py).

Tars are written with a fixed mtime, owner and mode, and sample entries in sorted
key order, so the same samples give byte-identical tars (and sha256) on every run.
"""

import hashlib
import io
import json
import os

import numpy as np

from textgan.atomic import removed_on_error
from textgan.data import format as fmt
from textgan.data.building.tar_write import END_OF_ARCHIVE, sample_bytes
from textgan.data.manifest import fsync_dir, read_json, write_json_atomic

# 2020-01-01T00:00:00Z: any constant works; the point is that it never changes.
TAR_MTIME = 1577836800


def record_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, name + fmt.SHARD_RECORD_SUFFIX)


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_sample(image_id: int, jpeg: bytes, meta: dict, features: dict | None = None) -> dict:
    """A WebDataset sample of bytes values: key, jpg, json, txt (the first caption) and optional .npy features."""
    sample = {
        "__key__": fmt.sample_key(image_id),
        fmt.KEY_JPG: jpeg,
        fmt.KEY_JSON: json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8"),
        fmt.KEY_TXT: meta["captions"][0].encode("utf-8"),
    }
    for key, array in (features or {}).items():
        sample[key] = npy_bytes(array)
    return sample


def load_done_record(out_dir: str, name: str) -> dict | None:
    """The record of a finished shard `name`, or None when it is not (completely) there."""
    tar = os.path.join(out_dir, name)
    try:
        record = read_json(record_path(out_dir, name))
        size = os.path.getsize(tar)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("name") != name or record.get("size") != size:
        return None
    return record


def write_shard(out_dir: str, name: str, samples: list, skipped: list) -> dict:
    """Write `samples` (from encode_sample) as shard `name` following the protocol above.
    Returns the shard record. On any error (disk full, ...) the tmp file is removed and
    the error re-raised: nothing half-written is left that could count as done."""
    final = os.path.join(out_dir, name)
    tmp = final + fmt.TMP_SUFFIX
    with removed_on_error(tmp):
        digest = hashlib.sha256()  # hashed as written: no second read of the file
        with open(tmp, "wb") as f:
            for data in [sample_bytes(sample, TAR_MTIME) for sample in samples] + [END_OF_ARCHIVE]:
                digest.update(data)
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        record = {
            "name": name,
            "samples": len(samples),
            "sha256": digest.hexdigest(),
            "size": os.path.getsize(tmp),
            "image_ids": [int(s["__key__"]) for s in samples],
            "skipped": skipped,
        }
        # An old tar of this name (e.g. a truncated one being redone) must not pair up
        # with the new record if we are killed between the next two steps.
        if os.path.lexists(final):
            os.remove(final)
        write_json_atomic(record_path(out_dir, name), record)
        os.replace(tmp, final)
    fsync_dir(out_dir)
    return record
