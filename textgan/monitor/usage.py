"""What a run has used, summed over all its attempts: GPU-hours (CPU core-hours for CPU jobs) and their cost.

From Slurm's accounting when it knows the run's jobs: each instance's elapsed time (a requeued job has one
per start; the running one counts up to now) times its allocated GPUs (AllocTRES gres/gpu) or CPUs (NCPUS).
Otherwise (--local runs, purged accounting) from RUN/attempts.jsonl: each attempt's start to its end (to
now while the job runs, to its last heartbeat when it died without an end) times the GPUs / cores it
recorded.

    usage = {"unit": "gpu_hours" | "cpu_core_hours", "gpu_hours", "cpu_core_hours", "cost", "source"}

cost = the unit's hours x the price given for it (--price-per-gpu-hour, --price-per-cpu-hour), else None.
"""

from typing import Optional

from textgan.monitor.job_state import slurm_job_ids
from textgan.monitor.slurm_jobs import SlurmView


def _from_slurm(row: dict, view: SlurmView) -> Optional[tuple]:
    gpu_s = cpu_s = 0.0
    found = False
    for job_id in slurm_job_ids(row):
        lines = list(view.instances.get(job_id, []))
        live = view.live.get(job_id)
        if live is not None and live.get("state") == "RUNNING" and not any(
                line["state"] == "RUNNING" for line in lines):
            # accounting has not heard of this start yet; squeue shows no GPUs for a --gpus-per-node request
            # (submitit's), so the job's request counts
            lines.append(dict(live, gpus=live.get("gpus") or (row.get("job") or {}).get("gpus") or 0))
        for line in lines:
            found = True
            seconds = line.get("elapsed_sec") or 0
            gpu_s += seconds * (line.get("gpus") or 0)
            cpu_s += seconds * (line.get("cpus") or 0)
    return (gpu_s, cpu_s) if found else None


def _from_attempts(row: dict, now: float, running: bool) -> tuple:
    gpu_s = cpu_s = 0.0
    attempts = row["attempts"]
    for i, attempt in enumerate(attempts):
        start = attempt.get("started_unix")
        if start is None:
            continue
        end = attempt.get("ended_unix")
        if end is None:
            beat = row["heartbeat"]
            last = i == len(attempts) - 1
            end = now if (last and running) else (beat or {}).get("unix") if last else None
        seconds = max(0.0, (end or start) - start)
        gpu_s += seconds * (attempt.get("gpus") or 0)
        cpu_s += seconds * (attempt.get("cpus") or 0)
    return gpu_s, cpu_s


def usage_of(row: dict, view: Optional[SlurmView], now: float, price_per_gpu_hour: Optional[float] = None,
             price_per_cpu_hour: Optional[float] = None) -> dict:
    seconds = _from_slurm(row, view) if view is not None else None
    source = "slurm"
    if seconds is None:
        source = "attempts"
        seconds = _from_attempts(row, now, running=(row.get("job") or {}).get("state") == "RUNNING")
    gpu_hours, cpu_hours = seconds[0] / 3600.0, seconds[1] / 3600.0
    unit = "gpu_hours" if gpu_hours > 0 or ((row.get("job") or {}).get("gpus") or 0) > 0 else "cpu_core_hours"
    price = price_per_gpu_hour if unit == "gpu_hours" else price_per_cpu_hour
    hours = gpu_hours if unit == "gpu_hours" else cpu_hours
    return {"unit": unit, "gpu_hours": gpu_hours, "cpu_core_hours": cpu_hours,
            "cost": None if price is None else hours * price, "source": source}
