"""One run directory -> one row of the monitor: progress, speed, attempts, heartbeat and metrics.

Reads only what a run writes (textgan.train's files): config.yaml (the target kimg), the last lines of
stats.jsonl (kimg, tick, sec/kimg, elapsed, skips), heartbeat.json, attempts.jsonl, requeues.jsonl and each
metric-NAME.jsonl. Nothing is written. The row is the monitor's JSON schema (SCHEMA_VERSION); its keys:

    run_dir, desc, kimg, total_kimg, progress (0..1), tick, sec_per_kimg (median of the last RECENT_TICKS
    ticks), eta_sec, elapsed_sec, last_tick_utc, nonfinite_skips and data_skipped (counts in the latest tick),
    heartbeat ({"age_sec", "phase", "attempt", "job_id", "hosts", "utc"} or None), attempts ([{"attempt",
    "job_id", "hosts", "started_utc", "ended_utc", "outcome", "error", "kimg"}]), requeues, metrics
    ({column: {"latest", "latest_kimg", "best", "best_kimg", "trend"}}), submissions ([{"job_id", "executor",
    "utc", "nodes", "tasks_per_node", "gpus_per_node", ...}] from RUN/submissions.jsonl)

textgan.monitor.rows adds what needs Slurm or a clock: "job", "usage", "health" (see there). Within a
schema version keys are only added, never removed or given another meaning.
"""

import glob
import json
import os
import re
import statistics
import time
from typing import Optional

import yaml

from textgan.metrics.history import metric_summary
from textgan.monitor.health import tick_counts
from textgan.monitor.tail import tail_json
from textgan.train.heartbeat import ATTEMPTS_FILE, HEARTBEAT_FILE, SUBMISSIONS_FILE

SCHEMA_VERSION = 1
RECENT_TICKS = 3
CONFIG_FILE = "config.yaml"
STATS_FILE = "stats.jsonl"
REQUEUES_FILE = "requeues.jsonl"


def is_run_dir(path: str) -> bool:
    """A run's directory: its config and what training wrote, or a job submitted for it (still pending)."""
    if os.path.isfile(os.path.join(path, SUBMISSIONS_FILE)):
        return True
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and (
        os.path.exists(os.path.join(path, STATS_FILE)) or os.path.isdir(os.path.join(path, "checkpoints"))
        or os.path.isdir(os.path.join(path, "logs")))


def _mean(line: dict, key: str) -> Optional[float]:
    value = line.get(key)
    return float(value["mean"]) if isinstance(value, dict) and value.get("mean") is not None else None


# config.yaml as training writes it (block style, two-space indent): schedule.total_kimg found by a line scan.
# PyYAML's pure-Python loader takes ~5 ms for a whole run config, most of a refresh over 1,000 runs
# (benchmarks/bench_monitor.py); a config written by hand in another style falls back to the C loader.
_TOTAL_KIMG = re.compile(r"^schedule:[ \t]*\n(?:[ \t]+.*\n|[ \t]*\n)*?[ \t]+total_kimg:[ \t]*([^\s#]+)", re.MULTILINE)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _total_kimg(run_dir: str) -> Optional[float]:
    try:
        with open(os.path.join(run_dir, CONFIG_FILE), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    match = _TOTAL_KIMG.search(text)
    try:
        if match:
            return float(match.group(1))
        cfg = yaml.load(text, Loader=_YAML_LOADER) or {}
        return float(cfg["schedule"]["total_kimg"])
    except (KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


RESOURCES = ("executor", "world_size", "nodes", "gpus", "cpus")


def _attempts(run_dir: str) -> list:
    """One entry per attempt, its start and end lines merged (an attempt still running has no end)."""
    by_attempt = {}
    for line in tail_json(os.path.join(run_dir, ATTEMPTS_FILE), 1000):
        entry = by_attempt.setdefault(line.get("attempt"), {
            "attempt": line.get("attempt"), "job_id": line.get("job_id"), "hosts": line.get("hosts"),
            "started_utc": None, "ended_utc": None, "started_unix": None, "ended_unix": None, "outcome": None,
            "cause": None, "error": None, "kimg": None, **{k: None for k in RESOURCES}})
        if line.get("event") == "start":
            entry.update(started_utc=line.get("utc"), started_unix=line.get("unix"),
                         **{k: line.get(k) for k in RESOURCES})
        elif line.get("event") == "end":
            entry.update(ended_utc=line.get("utc"), ended_unix=line.get("unix"), outcome=line.get("outcome"),
                         cause=line.get("cause"), error=line.get("error"), kimg=line.get("kimg"))
    return [by_attempt[k] for k in sorted(by_attempt, key=lambda a: (a is None, a or 0))]


def _heartbeat(run_dir: str, now: float) -> Optional[dict]:
    try:
        with open(os.path.join(run_dir, HEARTBEAT_FILE), encoding="utf-8") as f:
            beat = json.load(f)
    except (OSError, ValueError):
        return None
    return {"age_sec": max(0.0, now - float(beat.get("unix", now))), "phase": beat.get("phase"),
            "attempt": beat.get("attempt"), "job_id": beat.get("job_id"), "hosts": beat.get("hosts"),
            "utc": beat.get("utc"), "unix": beat.get("unix"), "kimg": beat.get("kimg"), "pid": beat.get("pid"),
            "last_metrics_sec": beat.get("last_metrics_sec")}


def read_run(run_dir: str, now: Optional[float] = None, stats_tail: Optional[list] = None) -> dict:
    """The monitor's row for `run_dir` (see the module docstring). stats_tail: the last lines of its
    stats.jsonl when the caller read them already (at least RECENT_TICKS)."""
    now = time.time() if now is None else now
    run_dir = os.path.abspath(run_dir)
    if stats_tail is None:
        stats_tail = tail_json(os.path.join(run_dir, STATS_FILE), RECENT_TICKS)
    recent = stats_tail[-RECENT_TICKS:]
    last = recent[-1] if recent else {}
    kimg = _mean(last, "Progress/kimg")
    total = _total_kimg(run_dir)
    speeds = [v for v in (_mean(line, "Timing/sec_per_kimg") for line in recent) if v is not None]
    sec_per_kimg = statistics.median(speeds) if speeds else None
    eta = None
    if sec_per_kimg is not None and kimg is not None and total is not None:
        eta = max(0.0, total - kimg) * sec_per_kimg
    metrics = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "metric-*.jsonl"))):
        metrics.update(metric_summary(path, with_latest_kimg=True))
    submissions = tail_json(os.path.join(run_dir, SUBMISSIONS_FILE), 1000)
    if total is None and submissions:  # not started yet: the launcher said what it submitted
        total = submissions[-1].get("total_kimg")
    requeues = len(tail_json(os.path.join(run_dir, REQUEUES_FILE), 10_000))
    tick = _mean(last, "Progress/tick")
    return {"run_dir": run_dir, "desc": os.path.basename(run_dir), "kimg": kimg, "total_kimg": total,
            "progress": None if kimg is None or not total else min(1.0, kimg / total),
            "tick": None if tick is None else int(tick), "sec_per_kimg": sec_per_kimg, "eta_sec": eta,
            "elapsed_sec": _mean(last, "Timing/elapsed_sec"),
            "last_tick_utc": None if "timestamp" not in last else time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(last["timestamp"]))),
            "nonfinite_skips": tick_counts(last)[0], "data_skipped": tick_counts(last)[1],
            "heartbeat": _heartbeat(run_dir, now), "attempts": _attempts(run_dir), "requeues": requeues,
            "metrics": metrics, "submissions": submissions}
