"""Cached real-image data, keyed by everything that changes it, so a stale entry can never be served.

The key is the sha256 of a canonical JSON of the inputs (reference manifest hash, extractor name and
weights hashes, feature layer, resolution, resizing, sample count, selection seed, library versions,
CACHE_VERSION). The file name carries the key, and the file stores the full key dict as well: `load`
compares it field by field, so even a hash-prefix collision or a hand-copied file is refused.
Writes are atomic (tmp + rename): concurrent ranks or jobs may write the same entry harmlessly.
"""

import gzip
import hashlib
import io
import json
import os

import numpy as np

from textgan.atomic import write_bytes_atomic

# Bump when the way textgan computes any cached value changes (selection, decoding, batching...).
CACHE_VERSION = 1


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(fields: dict) -> str:
    """Hex sha256 of the inputs (plus CACHE_VERSION)."""
    return hashlib.sha256(canonical({"cache_version": CACHE_VERSION, **fields}).encode()).hexdigest()


def entry_path(cache_dir: str, kind: str, fields: dict, suffix: str) -> str:
    return os.path.join(cache_dir, f"{kind}-{cache_key(fields)[:40]}{suffix}")


def _matches(stored: str, fields: dict) -> bool:
    return stored == canonical({"cache_version": CACHE_VERSION, **fields})


def load_arrays(cache_dir: str, kind: str, fields: dict):
    """{name: array} of a cached entry whose stored key equals `fields`, else None."""
    path = entry_path(cache_dir, kind, fields, ".npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not _matches(str(data["__key__"]), fields):
                return None
            return {k: data[k] for k in data.files if k != "__key__"}
    except (OSError, KeyError, ValueError):  # missing, truncated or foreign: recompute
        return None


def save_arrays(cache_dir: str, kind: str, fields: dict, arrays: dict) -> str:
    os.makedirs(cache_dir, exist_ok=True)
    path = entry_path(cache_dir, kind, fields, ".npz")
    buffer = io.BytesIO()
    key = canonical({"cache_version": CACHE_VERSION, **fields})
    np.savez(buffer, __key__=np.array(key), **arrays)
    write_bytes_atomic(path, buffer.getvalue(), tmp=f"{path}.tmp{os.getpid()}")
    return path


def load_json(cache_dir: str, kind: str, fields: dict):
    path = entry_path(cache_dir, kind, fields, ".json.gz")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(data, dict) or not _matches(data.get("__key__"), fields):
        return None
    return data["value"]


def save_json(cache_dir: str, kind: str, fields: dict, value) -> str:
    os.makedirs(cache_dir, exist_ok=True)
    path = entry_path(cache_dir, kind, fields, ".json.gz")
    key = canonical({"cache_version": CACHE_VERSION, **fields})
    data = gzip.compress(json.dumps({"__key__": key, "value": value}).encode("utf-8"), mtime=0)
    write_bytes_atomic(path, data, tmp=f"{path}.tmp{os.getpid()}")
    return path
