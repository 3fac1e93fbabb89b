"""What a run's metric files say over time: each metric-NAME.jsonl's latest and best values.

    metric_summary("runs/00000-demo/metric-fid10k.jsonl")
    -> {"fid10k": {"latest": 31.2, "best": 29.8, "best_kimg": 400.0}, ...}

Lines are {"tick", "kimg", "value", "results": {key: value}} as textgan.metrics.evaluator appends them. Best is
the minimum for distances (fid*, kid*, *loss*, lpips*), the maximum otherwise. Used by the sweep table and the
monitor.
"""

import math
import os
import re
from typing import Dict

from textgan.files import read_jsonl

_LOWER_IS_BETTER = re.compile(r"^(fid|kid|lpips)|loss|distance", re.IGNORECASE)


def lower_is_better(metric: str) -> bool:
    return bool(_LOWER_IS_BETTER.search(metric))


def trend(column: str, values: list):
    """"better" / "worse" / "flat" for the latest (kimg, value) of a series against the one before; None alone."""
    if len(values) < 2:
        return None
    previous, latest = values[-2][1], values[-1][1]
    if latest == previous:
        return "flat"
    return "better" if (latest < previous) == lower_is_better(column) else "worse"


def metric_summary(path: str, with_latest_kimg: bool = False) -> Dict[str, dict]:
    """{column: {"latest", "best", "best_kimg"}} for one metric-NAME.jsonl (and "latest_kimg" and "trend" when
    asked)."""
    metric = os.path.basename(path)[len("metric-"):-len(".jsonl")]
    by_tick = {}
    for entry in read_jsonl(path, tolerant=True):  # a resumed run may measure a tick again: the last measurement counts
        if isinstance(entry.get("results"), dict):
            by_tick[(entry.get("tick"), entry.get("kimg"))] = entry
    series: Dict[str, list] = {}
    for entry in sorted(by_tick.values(), key=lambda e: float(e.get("kimg") or 0)):
        # The evaluator's lines carry the metric's headline number as "value" (e.g. fid10k's FID),
        # the details in "results"; older lines only "results".
        items = list(entry["results"].items())
        if entry.get("value") is not None:
            items = [(metric, entry["value"])] + [(k, v) for k, v in items if k != metric]
        for key, value in items:
            if key == "n" or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            column = metric if key == metric else f"{metric}/{key}"
            series.setdefault(column, []).append((float(entry.get("kimg") or 0), float(value)))
    out = {}
    for column, values in series.items():
        pick = min if lower_is_better(column) else max
        best_kimg, best = pick(values, key=lambda kv: kv[1])
        out[column] = {"latest": values[-1][1], "best": best, "best_kimg": best_kimg}
        if with_latest_kimg:
            out[column]["latest_kimg"] = values[-1][0]
            out[column]["trend"] = trend(column, values)
    return out
