"""The monitor's rows: each run's files (run_state) joined with Slurm (one query for all runs), its usage and
its health. What `textgan monitor` prints, renders to HTML and emits as JSON.

    rows, notes = monitor_rows(run_dirs, now, slurm=True, stall_floor=300, price_per_gpu_hour=None)

notes: what the reader should know about the answer itself (Slurm could not be asked, and why).
"""

import os
from typing import List, Optional

from textgan.monitor.health import STALL_FLOOR_S, assess
from textgan.monitor.job_state import enrich_attempts, job_of, slurm_job_ids
from textgan.monitor.run_state import STATS_FILE, read_run
from textgan.monitor.slurm_jobs import SlurmUnavailable, query
from textgan.monitor.tail import tail_json
from textgan.monitor.usage import usage_of

HEALTH_TICKS = 8  # stats lines the health rules look at (the trend rules need 3, the stall rule's median more)


def monitor_rows(run_dirs: List[str], now: float, slurm: bool = True, stall_floor: float = STALL_FLOOR_S,
                 price_per_gpu_hour: Optional[float] = None, price_per_cpu_hour: Optional[float] = None,
                 ask_slurm=query) -> tuple:
    tails = [tail_json(os.path.join(run_dir, STATS_FILE), HEALTH_TICKS) for run_dir in run_dirs]
    rows = [read_run(run_dir, now=now, stats_tail=tail) for run_dir, tail in zip(run_dirs, tails)]
    notes = []
    view = None
    wanted = [j for row in rows for j in slurm_job_ids(row)]
    if slurm and wanted:
        try:
            view = ask_slurm(wanted)
        except SlurmUnavailable as e:
            notes.append(str(e))
    for row, recent in zip(rows, tails):
        enrich_attempts(row, view)
        row["job"] = job_of(row, view)
        row["usage"] = usage_of(row, view, now, price_per_gpu_hour, price_per_cpu_hour)
        row["health"] = assess(row, recent, now, stall_floor)
    return rows, notes


FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "INTERRUPTED", "LOST"}


def last_activity(row: dict) -> Optional[float]:
    """When the run last did anything: its newest heartbeat, attempt end or submission."""
    times = [(row.get("heartbeat") or {}).get("unix")]
    times += [a.get("ended_unix") or a.get("started_unix") for a in row["attempts"]]
    times += [s.get("unix") for s in row["submissions"]]
    return max([t for t in times if t], default=None)


def is_old_and_done(row: dict, now: float, hours: float) -> bool:
    """A run whose job has ended and that did nothing for `hours`: hidden unless --all."""
    state = (row.get("job") or {}).get("state")
    if state not in FINAL_STATES and not (state is None and (row.get("heartbeat") or {}).get("phase") in (
            "finished", "stopped")):
        return False
    last = last_activity(row)
    return last is not None and now - last > hours * 3600
