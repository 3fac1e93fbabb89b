"""textgan.files: the one sha256-of-a-file and the one JSON-lines reader that every room uses."""

import hashlib
import json

import pytest

from textgan.files import read_jsonl, sha256_file


def test_sha256_file_reads_in_chunks_and_equals_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one default chunk
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == expected
    assert sha256_file(str(path), chunk_bytes=7) == expected


def test_read_jsonl_strict_raises_and_tolerant_skips_a_torn_line(tmp_path):
    path = tmp_path / "stats.jsonl"
    path.write_text(json.dumps({"kimg": 1}) + "\n" + json.dumps({"kimg": 2}) + '\n{"kimg": 3, "Lo')  # torn mid-write
    assert read_jsonl(str(path), tolerant=True) == [{"kimg": 1}, {"kimg": 2}]
    with pytest.raises(ValueError):
        read_jsonl(str(path))
    assert read_jsonl(str(tmp_path / "missing.jsonl"), tolerant=True) == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(str(tmp_path / "missing.jsonl"))
