"""Seed lists as StyleGAN3's gen_images.py takes them: `0-15`, `1,5,9`, or mixed (`0-3,10,20-22`).

Standard library only: the command line parses seeds before torch is imported.
"""

import re

from textgan.errors import UsageError

MAX_SEED = 2**32 - 1  # numpy.random.RandomState's range (StyleGAN3 seeds it with these)
_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_seeds(text: str) -> list:
    """[seed, ...] in the order written; a range `a-b` includes both ends. UsageError for anything else
    (negative numbers, a reversed range, a seed given twice: its image would be written twice)."""
    seeds = []
    for part in str(text).split(","):
        match = _PART.match(part)
        if not match:
            raise UsageError(f"--seeds {text!r}: {part.strip()!r} is not a seed or a range; write e.g. 0-15, 1,5,9 "
                             "or 0-3,10 (non-negative integers)")
        low = int(match.group(1))
        high = low if match.group(2) is None else int(match.group(2))
        if high < low:
            raise UsageError(f"--seeds {text!r}: the range {low}-{high} runs backwards; write {high}-{low}")
        if high > MAX_SEED:
            raise UsageError(f"--seeds {text!r}: seeds go up to {MAX_SEED}")
        seeds.extend(range(low, high + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1}) if len(set(seeds)) < len(seeds) else []
    if repeated:
        raise UsageError(f"--seeds {text!r}: seed {repeated[0]} is given twice; each seed makes one image per prompt")
    return seeds
