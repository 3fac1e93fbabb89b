"""Allowed ranges of numeric config values, and the one check that refuses everything else.

A value outside its range, NaN or +-inf fails before a job is submitted (UsageError, exit 2) with a
message that names the key and the range; inside the job the same value would fail only after the run
directory exists, or not at all (a NaN total_kimg trains forever: every comparison with NaN is False).
"""

import math
from dataclasses import dataclass

from textgan.errors import UsageError

# Image sides that G and D can be built for (StyleGAN2's blocks double from 4x4 up; below 16 the
# discriminator has no room for its blocks). The one list: config validation, the shard builder's
# --resolution and the networks all check against it, so shards that build always train.
RESOLUTIONS = tuple(2**i for i in range(4, 11))  # 16 .. 1024


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


@dataclass(frozen=True)
class Range:
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # True: low itself is not allowed ("> 0" rather than ">= 0")
    note: str = ""  # what a boundary value means, e.g. "0 disables it"

    def allows(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above_low = value > self.low if self.low_open else value >= self.low
        return above_low and value <= self.high

    def __str__(self) -> str:
        low = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high == math.inf:
            text = low
        elif self.low_open:
            text = f"{low} and <= {_number(self.high)}"
        else:
            text = f"from {_number(self.low)} to {_number(self.high)}"
        return f"{text} ({self.note})" if self.note else text


def at_least(low, note: str = "") -> Range:
    return Range(low=low, note=note)


def above(low, note: str = "") -> Range:
    return Range(low=low, low_open=True, note=note)


def between(low, high, note: str = "") -> Range:
    return Range(low=low, high=high, note=note)


def check_range(name: str, value, allowed: Range) -> None:
    """UsageError "NAME must be RANGE, got VALUE" unless allowed; None passes (an unset optional key)."""
    if value is None or allowed.allows(value):
        return
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    kind = "" if finite else "a finite number "
    raise UsageError(f"{name} must be {kind}{allowed}, got {value!r}")


def resolutions_text() -> str:
    """'16, 32, 64, 128, 256, 512, 1024': the allowed image sides, for error messages."""
    return ", ".join(str(r) for r in RESOLUTIONS)
