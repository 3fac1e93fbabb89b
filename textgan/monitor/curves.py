"""A run's curves for the monitor's charts: loss and timing stats over kimg from the tail of stats.jsonl, and
each metric's headline value over kimg from its metric-NAME.jsonl.

    read_curves("runs/00003-coco64")
    -> {"stats": {"Loss/G/adv": [(kimg, value), ...], ...}, "metrics": {"fid10k": [(kimg, value), ...]}}

Only the last STATS_TICKS ticks are read (a long run's stats.jsonl holds 100k lines; the monitor reads
hundreds of runs at each refresh), and every series is cut to at most MAX_POINTS points by `downsample`.
Standard library only, like the rest of the monitor.
"""

import glob
import math
import os
from typing import Dict, List, Optional, Tuple

from textgan.monitor.tail import tail_json

STATS_FILE = "stats.jsonl"
STATS_TICKS = 2000
METRIC_LINES = 2000
MAX_POINTS = 200
# The stats worth a chart: the adversarial losses (D's as real + fake halves, or one paired loss with
# loss.kind=rpgan), R1 and R2, D's real-image scores on held-out and training images (their gap is the
# overfitting sign) and the speed. Runs log only some of them; absent names get no series.
CHART_STATS = ("Loss/G/adv", "Loss/D/adv_real", "Loss/D/adv_fake", "Loss/D/adv", "Loss/D/r1", "Loss/D/r2",
               "Loss/D/val_real", "Loss/D/train_real", "Timing/sec_per_kimg")

Point = Tuple[float, float]


def _number(value) -> Optional[float]:
    """A finite float, else None: a chart has no place for NaN or inf (the health rules report those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _mean(line: dict, name: str) -> Optional[float]:
    stat = line.get(name)
    return _number(stat.get("mean")) if isinstance(stat, dict) else None


def downsample(points: List[Point], max_points: int = MAX_POINTS) -> List[Point]:
    """At most `max_points` of `points` (in kimg order), first and last kept.

    A chart a few hundred pixels wide shows no more than that, and a page of 1,000 runs with 2,000 points per
    series would weigh megabytes of SVG. The first and last points are kept so that the chart spans the run's
    real kimg range and ends on the latest value. In between, the points fall into buckets and each bucket
    keeps its lowest and highest point (in kimg order): a loss spike or a divergence must stay visible, which
    picking every n-th point would lose.
    """
    if len(points) <= max_points:
        return list(points)
    if max_points < 4:  # no room for a bucket: the ends alone
        return [points[0], points[-1]][:max_points]
    inner = points[1:-1]
    buckets = (max_points - 2) // 2
    kept = [points[0]]
    for b in range(buckets):
        bucket = inner[b * len(inner) // buckets:(b + 1) * len(inner) // buckets]
        low = min(range(len(bucket)), key=lambda i: bucket[i][1])
        high = max(range(len(bucket)), key=lambda i: bucket[i][1])
        kept += [bucket[i] for i in sorted({low, high})]
    kept.append(points[-1])
    return kept


def stats_series(run_dir: str, ticks: int = STATS_TICKS) -> Dict[str, List[Point]]:
    """{stat name: [(kimg, mean)]} over the last `ticks` lines of stats.jsonl, for the CHART_STATS it holds."""
    series: Dict[str, List[Point]] = {}
    for line in tail_json(os.path.join(run_dir, STATS_FILE), ticks):
        kimg = _mean(line, "Progress/kimg")
        if kimg is None:
            continue
        for name in CHART_STATS:
            value = _mean(line, name)
            if value is not None:
                series.setdefault(name, []).append((kimg, value))
    return series


def metric_series(path: str, lines: int = METRIC_LINES) -> Dict[str, List[Point]]:
    """{metric: [(kimg, headline value)]} from the tail of one metric-NAME.jsonl.

    The headline value is the line's "value" (older lines: results[NAME]), as textgan.metrics.history reads
    it. A resumed run may measure a tick again: the last measurement of a (tick, kimg) counts."""
    metric = os.path.basename(path)[len("metric-"):-len(".jsonl")]
    by_tick = {}
    for entry in tail_json(path, lines):
        results = entry.get("results") if isinstance(entry.get("results"), dict) else {}
        value = _number(entry.get("value") if entry.get("value") is not None else results.get(metric))
        kimg = _number(entry.get("kimg"))
        if value is not None and kimg is not None:
            by_tick[(entry.get("tick"), kimg)] = (kimg, value)
    return {metric: sorted(by_tick.values())} if by_tick else {}


def read_curves(run_dir: str) -> dict:
    """{"stats": {name: points}, "metrics": {metric: points}}, every series downsampled to MAX_POINTS."""
    stats = stats_series(run_dir)
    metrics: Dict[str, List[Point]] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), "metric-*.jsonl"))):
        metrics.update(metric_series(path))
    return {"stats": {name: downsample(points) for name, points in stats.items()},
            "metrics": {name: downsample(points) for name, points in metrics.items()}}
