"""Which record goes into which shard: decided before any image is touched.

The plan depends only on the source's records and the settings (seed, limit, parts,
samples per shard), never on what happens at run time: a skipped image just makes
its shard shorter. That is what makes resume, worker counts and parts exact.
"""

from dataclasses import dataclass

import numpy as np

from textgan.data import format as fmt


@dataclass
class ShardPlan:
    index: int
    name: str
    records: list  # Records in the order they are written


def order_records(records: list, seed: int, limit: int | None = None) -> list:
    """Records sorted by image_id, shuffled by a permutation of `seed`, cut to `limit`.

    Sorting first makes the order independent of how the source listed its images;
    shuffling spreads any structure of the id order (e.g. by category) over all shards.
    """
    by_id = sorted(records, key=lambda r: r.image_id)
    order = np.random.default_rng(seed).permutation(len(by_id))
    shuffled = [by_id[i] for i in order]
    return shuffled if limit is None else shuffled[:limit]


def part_slice(n: int, part: int, num_parts: int) -> tuple:
    """[start, stop) of part `part` of `num_parts` contiguous, near-equal parts of n items."""
    if not 0 <= part < num_parts:
        raise ValueError(f"part {part} is not in 0..{num_parts - 1}")
    return (part * n) // num_parts, ((part + 1) * n) // num_parts


def plan_shards(records: list, *, split: str, seed: int, limit: int | None, samples_per_shard: int,
                part: int = 0, num_parts: int = 1) -> list:
    """The shards of part `part`: consecutive chunks of samples_per_shard planned records."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    ordered = order_records(records, seed, limit)
    start, stop = part_slice(len(ordered), part, num_parts)
    mine = ordered[start:stop]
    return [
        ShardPlan(index=i, name=fmt.shard_name(split, i, part, num_parts),
                  records=mine[offset:offset + samples_per_shard])
        for i, offset in enumerate(range(0, len(mine), samples_per_shard))
    ]
