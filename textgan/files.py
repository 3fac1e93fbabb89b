"""Reading files the same way everywhere: the sha256 of a file, and JSON-lines files.

A tiny top-level module (standard library only) so that every room can use it: the shard builder
and verifier (shard digests), the encoders and metrics (weights digests), the split-overlap check
(image bytes), the sweep results table (stats.jsonl, metric-*.jsonl) and the tests.
"""

import hashlib
import json
from typing import List

CHUNK_BYTES = 1 << 20


def sha256_file(path: str, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in chunks (weights files and shards can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_jsonl(path: str, tolerant: bool = False) -> List[dict]:
    """The records of a JSON-lines file (stats.jsonl, metric-*.jsonl, requeues.jsonl), in order.

    tolerant=False (tests, anything that must be exact): a missing file or a line that is not JSON raises.
    tolerant=True (reading the run dir of a job that may still be running or may never have started):
    a missing file gives [] and lines that do not parse (a torn last line mid-write) are skipped.
    """
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    if not tolerant:
                        raise
    except FileNotFoundError:
        if not tolerant:
            raise
    return records
