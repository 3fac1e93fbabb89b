"""The monitor's rows as a table: plain text for a pipe or a log, a rich Table for --watch.

One cell function per column, shared by both renderers, so the two always show the same thing.
"""

from typing import List

BAR = 20
HEADER = ("run", "job", "state", "nodes x tasks", "attempts", "progress", "sec/kimg", "ETA", "elapsed", "usage",
          "cost", "metric", "health")


def duration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_cell(row) -> str:
    if row["kimg"] is None:
        return "not started"
    if not row["progress"] and row["progress"] != 0:
        return f"{row['kimg']:g} kimg"
    filled = int(round(row["progress"] * BAR))
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {row['kimg']:g}/{row['total_kimg']:g}"


ARROW = {"better": "(better)", "worse": "(worse)", "flat": "(flat)"}


def headline_metric(metrics: dict) -> str:
    """The first metric column without a '/' (a metric's headline number): latest, trend, best (at kimg)."""
    for column, m in metrics.items():
        if "/" not in column:
            trend = f" {ARROW[m['trend']]}" if m.get("trend") in ARROW else ""
            return f"{column} {m['latest']:.4g}{trend} (best {m['best']:.4g} @ {m['best_kimg']:g})"
    return "-"


def last_outcome(attempts) -> str:
    """How the newest attempt ended: its recorded outcome; for one killed without a word (scancel, SIGKILL)
    Slurm's state for it; "running" while it has neither."""
    return attempts[-1].get("outcome") or (attempts[-1].get("state") or "running").lower()


def attempts_cell(row) -> str:
    attempts = row["attempts"]
    if not attempts:
        return "-"
    requeues = sum(a.get("outcome") == "requeued" for a in attempts)
    return f"{len(attempts)}: {last_outcome(attempts)}" + (f" ({requeues} requeued)" if requeues else "")


def job_cell(row) -> str:
    job = row.get("job") or {}
    return job.get("id") or "-"


def state_cell(row) -> str:
    job = row.get("job") or {}
    state = job.get("state") or "?"
    return f"{state} ({job['reason']})" if job.get("reason") and state == "PENDING" else state


def shape_cell(row) -> str:
    job = row.get("job") or {}
    if not job.get("tasks"):
        return "-"
    gpus = f", {job['gpus']} GPU" if job.get("gpus") else ""
    return f"{job.get('nodes') or 1} x {job['tasks'] // (job.get('nodes') or 1)}{gpus}"


def usage_cell(row) -> str:
    usage = row.get("usage")
    if not usage:
        return "-"
    if usage["unit"] == "gpu_hours":
        return f"{usage['gpu_hours']:.3g} GPU-h"
    return f"{usage['cpu_core_hours']:.3g} core-h"


def cost_cell(row) -> str:
    usage = row.get("usage") or {}
    return "-" if usage.get("cost") is None else f"{usage['cost']:,.2f}"


def health_cell(row) -> str:
    return (row.get("health") or {}).get("state", "-")


def cells(row) -> tuple:
    beat_speed = "-" if row["sec_per_kimg"] is None else f"{row['sec_per_kimg']:.3g}"
    return (row.get("name", row["desc"]), job_cell(row), state_cell(row), shape_cell(row), attempts_cell(row), progress_cell(row),
            beat_speed, duration(row["eta_sec"]), duration(row["elapsed_sec"]), usage_cell(row), cost_cell(row),
            headline_metric(row["metrics"]), health_cell(row))


def findings(rows) -> List[str]:
    """One line per rule that holds for a run (OK runs say nothing): what a reader acts on."""
    lines = []
    for row in rows:
        for f in (row.get("health") or {}).get("all", []):
            lines.append(f"{row.get('name', row['desc'])}: {f['state']}: {f['evidence']}")
    return lines


def plain_table(rows) -> str:
    lines = [HEADER] + [cells(row) for row in rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(HEADER))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


STYLE = {"OK": "green", "NONFINITE": "bold red", "OOM": "bold red", "FAILED": "bold red", "TIMEOUT": "red",
         "STALLED": "bold red", "DIVERGING": "red", "CANCELLED": "yellow", "OVERFITTING": "yellow", "DATA": "yellow",
         "PENDING": "cyan", "PREEMPTED": "yellow", "REQUEUED": "yellow"}


COMPACT_HEADER = ("run", "job", "state", "health", "progress", "sec/kimg", "ETA", "usage", "metric")


def compact_cells(row) -> tuple:
    """The columns a refreshing terminal has room for (the full table is `textgan monitor` without --watch)."""
    progress = "not started" if row["kimg"] is None else (
        f"{row['kimg']:g} kimg" if not row["progress"] and row["progress"] != 0
        else f"{100 * row['progress']:.0f}% {row['kimg']:g}/{row['total_kimg']:g}")
    metric = next((f"{c} {m['latest']:.4g}" for c, m in row["metrics"].items() if "/" not in c), "-")
    speed = "-" if row["sec_per_kimg"] is None else f"{row['sec_per_kimg']:.3g}"
    return (row.get("name", row["desc"]), job_cell(row), state_cell(row), health_cell(row), progress, speed, duration(row["eta_sec"]),
            usage_cell(row), metric)


def rich_table(rows, title: str):
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in COMPACT_HEADER:  # what a reader scans for never wraps; the rest folds when the terminal is narrow
        table.add_column(name, no_wrap=name in ("run", "job", "state", "health"), overflow="fold")
    for row in rows:
        values = [escape(str(v)) for v in compact_cells(row)]  # a run or metric name may hold rich's [markup]
        values[3] = f"[{STYLE.get(values[3], 'white')}]{values[3]}[/]"
        table.add_row(*values)
    return table
