"""The last lines of a file without reading the whole file: a run's stats.jsonl grows by a line per tick for
weeks, and the monitor reads hundreds of them at every refresh."""

import json
import os
from typing import List

BLOCK = 64 * 1024
FIRST_BLOCK = 16 * 1024


def tail_lines(path: str, count: int) -> List[str]:
    """The last `count` complete lines of `path` (a line still being written, without its newline, is left out);
    [] when the file is missing or empty."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = position = f.tell()
            # Blocks collected and joined once, newlines counted per block: prepending each block to the data
            # read so far and recounting it all would be quadratic (0.1 s for the 4 MB of 2,000 ticks).
            blocks, newlines, block = [], 0, FIRST_BLOCK
            while position > 0 and newlines <= count:
                step = min(block, position)
                block = BLOCK  # a first small read serves the usual few-line tail of a 2 KB-per-line file
                position -= step
                f.seek(position)
                blocks.append(f.read(step))
                newlines += blocks[-1].count(b"\n")
            data = b"".join(reversed(blocks))
    except FileNotFoundError:
        return []
    if end and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]  # the unfinished last line
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0:
        lines = lines[1:]  # the first line read may be cut
    return lines[-count:] if count else []


def tail_json(path: str, count: int) -> List[dict]:
    """The last `count` lines of a JSON-lines file that parse as JSON objects (a torn line is skipped)."""
    out = []
    for line in tail_lines(path, count):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
