"""Which job a run is, and in what state: Slurm's word when it has one, else what the run's files and this
machine's processes say (runs launched with --local, or a cluster whose accounting purged the job).

    job = {"id", "state", "source" (slurm | local | files), "reason", "nodes", "tasks", "gpus", "cpus",
           "exit_code", "node_list"}

Local states (no scheduler to ask): RUNNING while the job's process lives on this host, else the last
attempt's outcome: COMPLETED, FAILED, INTERRUPTED (Ctrl-C, state saved), REQUEUED; LOST when an attempt
started and never wrote its end (killed without a word: SIGKILL, the kernel's OOM killer, a reboot).
"""

import os
import socket
from typing import Optional

from textgan.monitor.slurm_jobs import SlurmView

OUTCOME_STATE = {"completed": "COMPLETED", "failed": "FAILED", "interrupted": "INTERRUPTED",
                 "requeued": "REQUEUED"}

def current_job(row: dict) -> tuple:
    """(job id, executor) of the run's newest job: its latest submission or attempt, whichever is newer."""
    candidates = [(s.get("unix") or 0, s.get("job_id"), s.get("executor")) for s in row["submissions"]]
    candidates += [(a.get("started_unix") or 0, a.get("job_id"), a.get("executor")) for a in row["attempts"]]
    candidates = [c for c in candidates if c[1]]
    if not candidates:
        return None, None
    _, job_id, executor = max(candidates, key=lambda c: c[0])
    return str(job_id), executor


def job_ids(row: dict) -> list:
    """Every job id the run names (its submissions and attempts), for one Slurm query over all runs."""
    ids = [s.get("job_id") for s in row["submissions"]] + [a.get("job_id") for a in row["attempts"]]
    return list(dict.fromkeys(str(j) for j in ids if j))


def slurm_job_ids(row: dict) -> list:
    """The job ids of the run that went through Slurm (not --local ones, whose ids are process ids)."""
    local = {str(s.get("job_id")) for s in row["submissions"] if s.get("executor") == "local"}
    local |= {str(a.get("job_id")) for a in row["attempts"] if a.get("executor") == "local"}
    return [j for j in job_ids(row) if j not in local]


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _local_alive(row: dict, job_id: Optional[str]) -> bool:
    """A --local job runs on the host that submitted it; its id is the pid of submitit's job process, and the
    heartbeat names the training process."""
    here = socket.gethostname()
    submission = next((s for s in reversed(row["submissions"]) if str(s.get("job_id")) == job_id), None)
    if submission is not None and submission.get("host") in (None, here) and _pid_alive(job_id):
        return True
    beat = row["heartbeat"]
    return bool(beat and beat.get("pid") and beat.get("hosts") == here and beat.get("phase") not in (
        "finished", "stopped") and _pid_alive(beat["pid"]))


def _state_from_files(row: dict, job_id: Optional[str], alive: bool) -> Optional[str]:
    attempts = [a for a in row["attempts"] if job_id is None or str(a.get("job_id")) == job_id] or row["attempts"]
    if alive:
        return "RUNNING"
    if not attempts:
        return "LOST" if row["submissions"] else None
    last = attempts[-1]
    return OUTCOME_STATE.get(last.get("outcome"), "LOST")


def _requested(row: dict, job_id: Optional[str]) -> dict:
    """What the job asked for: its submission record, else the resources its attempt recorded."""
    sub = next((s for s in reversed(row["submissions"]) if str(s.get("job_id")) == job_id), None)
    attempt = next((a for a in reversed(row["attempts"]) if str(a.get("job_id")) == job_id), None)
    nodes = tasks = gpus = cpus = None
    if sub is not None and sub.get("nodes"):
        nodes, tasks = sub["nodes"], sub["nodes"] * (sub.get("tasks_per_node") or 1)
        gpus = sub["nodes"] * (sub.get("gpus_per_node") or 0)
        cpus = None if not sub.get("cpus_per_task") else tasks * sub["cpus_per_task"]
    if attempt is not None:
        nodes, tasks = attempt.get("nodes") or nodes, attempt.get("world_size") or tasks
        gpus = attempt.get("gpus") if attempt.get("gpus") is not None else gpus
        cpus = attempt.get("cpus") or cpus
    return {"nodes": nodes, "tasks": tasks, "gpus": gpus, "cpus": cpus}


def job_of(row: dict, view: Optional[SlurmView]) -> dict:
    """The row's "job" entry (see the module docstring)."""
    job_id, executor = current_job(row)
    job = {"id": job_id, "state": None, "source": "files", "reason": None, "exit_code": None, "node_list": None,
           **_requested(row, job_id)}
    record = view.latest(job_id) if (view is not None and job_id and executor != "local") else None
    if record is not None:
        job.update(source="slurm", state=record["state"], reason=record.get("reason"),
                   exit_code=record.get("exit_code"), node_list=record.get("node_list"))
        for key in ("nodes", "cpus", "gpus"):
            if record.get(key):
                job[key] = record[key]
        return job
    if executor == "local":
        job.update(source="local", state=_state_from_files(row, job_id, _local_alive(row, job_id)))
        return job
    job["state"] = _state_from_files(row, job_id, alive=False) if row["attempts"] else None
    if job["state"] == "LOST" and row["heartbeat"] and row["heartbeat"].get("phase") not in ("finished", "stopped"):
        job["state"] = None  # a Slurm job Slurm could not be asked about: unknown, not lost
    return job


def enrich_attempts(row: dict, view: Optional[SlurmView]) -> None:
    """Give each attempt Slurm's account of it (state, exit code, elapsed, nodes): the k-th attempt of job J is
    J's k-th accounting instance (sacct -D lists a requeued job once per start)."""
    seen = {}
    for attempt in row["attempts"]:
        job_id = str(attempt.get("job_id"))
        k = seen[job_id] = seen.get(job_id, -1) + 1
        lines = [] if view is None else view.instances.get(job_id, [])
        line = lines[k] if k < len(lines) else None
        attempt.update(state=None, exit_code=None, node_list=None, elapsed_sec=None)
        if line is not None:
            attempt.update(state=line["state"], exit_code=line["exit_code"], node_list=line["node_list"],
                           elapsed_sec=line["elapsed_sec"])
        elif attempt.get("started_unix") and attempt.get("ended_unix"):
            attempt["elapsed_sec"] = max(0.0, attempt["ended_unix"] - attempt["started_unix"])
