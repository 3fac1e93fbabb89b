"""Ratio benchmarks: measure two things side by side, interleaved, in one run.

This machine is shared and noisy, so absolute seconds mean little from one run to the
next; a ratio of two measurements taken alternately in the same minutes does. Every
benchmark returns `Result`s; `benchmarks/run.py` writes them into BENCHMARKS.md.
"""

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Result:
    name: str  # short id, e.g. "shards/workers"
    what: str  # one sentence: what the ratio means
    baseline: str  # label of the denominator
    candidate: str  # label of the numerator
    baseline_value: float
    candidate_value: float
    unit: str  # unit of the two values, e.g. "images/s"
    ratio_meaning: str = "candidate / baseline"
    notes: list = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.candidate_value / self.baseline_value if self.baseline_value else float("nan")


def interleaved(baseline: Callable[[], float], candidate: Callable[[], float], repeats: int = 3):
    """Run baseline and candidate alternately `repeats` times each (B, C, B, C, ...) and return
    the median value of each. Each callable returns its own measurement (e.g. items/s)."""
    b_values, c_values = [], []
    for _ in range(repeats):
        b_values.append(baseline())
        c_values.append(candidate())
    return statistics.median(b_values), statistics.median(c_values)


def rate(fn: Callable[[], int]) -> float:
    """Items per second of fn, which does the work and returns how many items it handled."""
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def machine_summary() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}"
    )
