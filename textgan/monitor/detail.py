"""One run in detail (`textgan monitor RUN_DIR`): below its table row, each attempt (job id, hosts, start, end,
Slurm state, exit code, why it ended), each metric's curve in brief, what the health rules found, the last
lines of its log, its newest and best checkpoints and the TensorBoard command. Reads only; writes nothing.
"""

import json
import os
import shlex

from textgan.files import read_jsonl
from textgan.monitor.table import duration
from textgan.monitor.tail import tail_lines

LOG_LINES = 15
CURVE_POINTS = 8


def _attempts(row) -> list:
    lines = [("attempt", "job", "hosts", "start (UTC)", "end (UTC)", "state", "exit", "elapsed", "ended because")]
    for a in row["attempts"]:
        why = a.get("outcome") or "running"
        if a.get("cause"):
            why += f" ({a['cause'].replace('_', ' ')})"
        if a.get("error"):
            why += f": {a['error']}"
        lines.append((str(a.get("attempt")), str(a.get("job_id") or "-"), str(a.get("node_list") or a.get("hosts") or "-"),
                      a.get("started_utc") or "-", a.get("ended_utc") or "-", a.get("state") or "-",
                      a.get("exit_code") or "-", duration(a.get("elapsed_sec")), why))
    if len(lines) == 1:
        return ["attempts: none recorded yet"]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    return ["attempts:"] + ["  " + "  ".join(c.ljust(w) for c, w in zip(line[:-1], widths)) + "  " + line[-1]
                            for line in lines]


def _metric_curves(run_dir: str) -> list:
    """Each metric file's headline number at its evaluations (the last CURVE_POINTS of them)."""
    out = []
    for name in sorted(os.listdir(run_dir)):
        if not (name.startswith("metric-") and name.endswith(".jsonl")):
            continue
        metric = name[len("metric-"):-len(".jsonl")]
        points = [(float(e.get("kimg") or 0), e["value"]) for e in read_jsonl(os.path.join(run_dir, name), tolerant=True)
                  if isinstance(e.get("value"), (int, float))]
        if points:
            shown = " ".join(f"{v:.4g}@{k:g}" for k, v in points[-CURVE_POINTS:])
            out.append(f"  {metric}: {len(points)} evaluations; value@kimg: {'... ' if len(points) > CURVE_POINTS else ''}"
                       f"{shown}")
    return ["metric curves:"] + out if out else ["metric curves: no evaluation yet"]


def _log_tail(row) -> list:
    """The last lines of the newest rank-0 log of the run's current job (its .err holds the tracebacks)."""
    job_id = (row.get("job") or {}).get("id")
    run_dir = row["run_dir"]
    candidates = []
    for folder in (os.path.join(run_dir, "logs"), os.path.join(os.path.dirname(run_dir), "logs")):
        for suffix in ("out", "err"):
            path = os.path.join(folder, f"{job_id}_0_log.{suffix}")
            if job_id and os.path.isfile(path):
                candidates.append(path)
    out = []
    for path in candidates:
        lines = [line for line in tail_lines(path, LOG_LINES) if line.strip()]
        if lines:
            out += [f"last lines of {path}:"] + [f"  {line[:300]}" for line in lines]
    return out or ["log: none found for this job"]


def _checkpoints(run_dir: str) -> list:
    out = []
    latest = os.path.join(run_dir, "checkpoints", "latest")
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as f:
            out.append(f"newest checkpoint: {os.path.join(run_dir, 'checkpoints', f.read().strip())}")
    best_root = os.path.join(run_dir, "best")
    if os.path.isdir(best_root):
        for metric in sorted(os.listdir(best_root)):
            marker = os.path.join(best_root, metric, "COMPLETE")
            if os.path.isfile(marker):
                try:
                    with open(marker, encoding="utf-8") as f:
                        serial = json.load(f).get("serial")
                except (OSError, ValueError):
                    serial = None
                note = f" (save #{serial})" if serial is not None else ""
                out.append(f"best checkpoint by {metric}: {os.path.join(best_root, metric)}{note}")
    return out or ["checkpoints: none complete yet"]


def detail(row) -> str:
    run_dir = row["run_dir"]
    lines = [""] + _attempts(row) + [""] + _metric_curves(run_dir) + [""]
    health = row.get("health") or {}
    if health.get("all"):
        lines += ["health:"] + [f"  {f['state']}: {f['evidence']}  (rule: {f['rule']})" for f in health["all"]] + [""]
    else:
        lines += ["health: OK (no rule holds)", ""]
    lines += _log_tail(row) + [""] + _checkpoints(run_dir)
    lines.append(f"tensorboard --logdir {shlex.quote(run_dir)}")
    return "\n".join(lines)
