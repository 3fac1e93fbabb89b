"""The training loader's skip-rate alarm (`data.max_skip_rate`): stop a run whose shards are damaged
beyond what the run tolerates, and never one whose damage is within it.

What it measures: the damaged fraction of the DATA, not of the samples drawn so far. The two differ
wildly early on: a truncated tar reports everything it lost the first time it is drawn (1501
skipped of 1517 drawn = 98.9% after one visit of a broken shard, in a set that is 37.5% damaged).

How: the loader's streams report, per shard, how many of the samples its manifest entry declares
they know to be unservable (lost to truncation, or met and failed to decode). Reads are
deterministic, so each report is a lower bound of that shard's damage; keeping the maximum per
shard keeps a lower bound. Their sum over the manifest's total is a lower bound of the damaged
fraction, and the alarm fires only when that bound exceeds max_skip_rate: it never stops a run
whose data is damaged less, and it stops one whose data is damaged more as soon as the streams
have met enough of the damage to prove it (at the latest once every shard was drawn and read
through). The skip counters (`.skipped`, `.seen`) are a separate, unchanged tally of the run.
"""

import os

# The alarm also waits until this many samples were drawn (the earlier rule's guard against a
# run stopping in its first batches; with the lower bound it only delays a certain verdict).
MIN_SAMPLES_FOR_SKIP_RATE = 100
_NAMED_SHARDS = 5  # the message names the worst shards, then counts the rest


class SkipRateExceeded(RuntimeError):
    """More of the shards' samples than the run's max_skip_rate allows are damaged."""


class SkipRateAlarm:
    """Per-shard known damage (shard index -> samples known unservable) and the verdict on it."""

    def __init__(self, max_skip_rate, shards_dir: str, paths: list, counts: list):
        self.max_skip_rate, self.shards_dir = max_skip_rate, shards_dir
        self.names = [os.path.basename(p) for p in paths]
        self.counts = [int(c) for c in counts]
        self.total = sum(self.counts)
        self.damage = {}

    def record(self, damage: dict) -> None:
        """Merge a stream's report {shard: known unservable samples} (a lower bound: keep the max)."""
        for shard, lost in damage.items():
            shard = int(shard)
            self.damage[shard] = min(max(self.damage.get(shard, 0), int(lost)), self.counts[shard])

    def state(self) -> dict:
        """JSON-friendly: {"shard index": samples}."""
        return {str(shard): lost for shard, lost in sorted(self.damage.items()) if lost > 0}

    def load(self, state) -> None:
        self.damage = {}
        self.record(state or {})

    @property
    def known_fraction(self) -> float:
        """Lower bound of the fraction of the manifest's samples that cannot be served."""
        return sum(self.damage.values()) / self.total

    def check(self, skipped: int, seen: int) -> None:
        """SkipRateExceeded when the known damaged fraction exceeds max_skip_rate."""
        drawn = skipped + seen
        if self.max_skip_rate is None or drawn < MIN_SAMPLES_FOR_SKIP_RATE:
            return
        if self.known_fraction > self.max_skip_rate:
            raise SkipRateExceeded(self._message(skipped, drawn))

    def _message(self, skipped: int, drawn: int) -> str:
        lost = sum(self.damage.values())
        worst = sorted(((n, s) for s, n in self.damage.items() if n > 0), key=lambda x: (-x[0], x[1]))
        named = ", ".join(f"{self.names[s]} {n} of {self.counts[s]}" for n, s in worst[:_NAMED_SHARDS])
        if len(worst) > _NAMED_SHARDS:
            named += f", and {len(worst) - _NAMED_SHARDS} more shard(s)"
        return (
            f"at least {lost} of the {self.total} samples the manifest of {self.shards_dir} lists "
            f"({self.known_fraction:.1%}) are damaged and cannot be served, more than "
            f"max_skip_rate={self.max_skip_rate:g}. Damaged shards (unservable samples): {named}. "
            f"This run skipped {skipped} of {drawn} samples drawn so far (a damaged shard counts its losses "
            f"every time it is drawn). Run `shards/build.py verify {self.shards_dir}` and rebuild the broken "
            "tars, or raise data.max_skip_rate."
        )
