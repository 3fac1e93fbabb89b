"""What a training job tells the outside while it runs, without Slurm: a heartbeat and its attempts.

    RUN/heartbeat.json   rewritten atomically by rank 0 at most every `every` seconds while training (and at
                         every tick, save, metrics pass and the end): a monitor that finds it older than a
                         few tick times knows the job is stuck (a hung collective, a dead loader), whatever
                         Slurm says. {"format": "textgan-heartbeat", "version": 1, "unix", "utc", "kimg",
                         "tick", "phase" (starting | training | saving | metrics | finished | stopped),
                         "attempt", "job_id", "array_task", "hosts", "pid", "every_s", and after the first
                         metrics pass "last_metrics_sec"}
    RUN/attempts.jsonl   one line when an attempt starts ("event": "start": attempt number, job id, array
                         task, hosts, Slurm restart count, what it resumed, ranks/nodes/GPUs/CPU cores) and
                         one when it ends ("event": "end": "outcome" completed | requeued | interrupted |
                         failed, the error's last line, kimg, and for a requeue its "cause" preemption |
                         time_limit), so a monitor shows every attempt of a requeued run without asking Slurm's
                         history (which a cluster may purge).
    RUN/submissions.jsonl one line per job the launcher submitted for this run (written by textgan.launch
                         before the job starts): job id, executor (slurm | local), the request (nodes,
                         tasks per node, GPUs per node, CPUs per task, time limit, partition), so a
                         monitor knows a pending job's id and what it asked for.

Cost: beat() compares a monotonic clock with the last write on every step and writes ~300 bytes every `every`
seconds (benchmarks/bench_heartbeat.py measures it against the training step).
"""

import datetime
import json
import os
import socket
import time
import traceback
from typing import Optional

from textgan.atomic import write_text_atomic

HEARTBEAT_FILE = "heartbeat.json"
ATTEMPTS_FILE = "attempts.jsonl"
SUBMISSIONS_FILE = "submissions.jsonl"
FORMAT = "textgan-heartbeat"
VERSION = 1
EVERY_S = 30.0  # a monitor's stall rule allows max(5 min, 3 x the median tick time): 30 s is far inside it


def _utc(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).isoformat(timespec="seconds")


def job_identity(attempt: Optional[int] = None) -> dict:
    """This process's job as the environment describes it (Slurm, submitit's local executor, or neither)."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    executor = os.environ.get("SUBMITIT_EXECUTOR") or ("slurm" if os.environ.get("SLURM_JOB_ID") else None)
    return {"attempt": attempt, "executor": executor,
            "job_id": f"{array_job}_{array_task}" if array_job and array_task else (
                os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")),
            "array_task": None if array_task is None else int(array_task),
            "hosts": os.environ.get("SLURM_JOB_NODELIST") or socket.gethostname(),
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


def attempt_resources(runtime) -> dict:
    """What this attempt holds, for the monitor's GPU-hours (CPU core-hours on CPU jobs) when Slurm's
    accounting is not there to ask (--local runs, a purged history): ranks, nodes, GPUs and CPU cores."""
    env = os.environ
    nodes = max(1, runtime.world_size // max(1, runtime.local_world_size))
    if env.get("SLURM_CPUS_PER_TASK"):
        cpus = int(env["SLURM_CPUS_PER_TASK"]) * runtime.world_size
    elif env.get("SLURM_CPUS_ON_NODE"):
        cpus = int(env["SLURM_CPUS_ON_NODE"]) * nodes
    else:  # a --local job shares this machine's cores (those this process may run on)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"world_size": runtime.world_size, "nodes": nodes, "device": runtime.device.type,
            "gpus": runtime.world_size if runtime.device.type == "cuda" else 0, "cpus": cpus}


class Heartbeat:
    def __init__(self, run_dir: str, identity: dict, enabled: bool = True, every: float = EVERY_S):
        self.path = os.path.join(run_dir, HEARTBEAT_FILE)
        self.identity, self.enabled, self.every = identity, enabled, float(every)
        self.last = None  # monotonic time of the last write
        # what the loop adds to every beat: "last_metrics_sec", the previous metrics pass's duration (a monitor
        # allows a pass that long before it calls a job in phase "metrics" stalled)
        self.extra = {}

    def beat(self, kimg: float, tick: int, phase: str = "training", force: bool = False) -> bool:
        """Write the heartbeat when `force` or `every` seconds have passed since the last; whether it wrote."""
        if not self.enabled:
            return False
        now = time.monotonic()
        if not force and self.last is not None and now - self.last < self.every:
            return False
        unix = time.time()
        record = {"format": FORMAT, "version": VERSION, "unix": unix, "utc": _utc(unix), "kimg": float(kimg),
                  "tick": int(tick), "phase": phase, **{k: self.identity.get(k) for k in
                                                        ("attempt", "job_id", "array_task", "hosts")},
                  "pid": os.getpid(), "every_s": self.every, **self.extra}
        if self.last is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_text_atomic(self.path, json.dumps(record) + "\n")
        self.last = now
        return True


def next_attempt(run_dir: str) -> int:
    """1 + the attempts recorded in RUN/attempts.jsonl: requeues, restarts and manual resumes all count."""
    try:
        with open(os.path.join(run_dir, ATTEMPTS_FILE), encoding="utf-8") as f:
            return 1 + sum('"event": "start"' in line for line in f)
    except FileNotFoundError:
        return 1


def record_attempt(run_dir: str, event: str, identity: dict, **fields) -> None:
    """Append one line to RUN/attempts.jsonl (rank 0 only calls this)."""
    unix = time.time()
    line = json.dumps({"event": event, "unix": unix, "utc": _utc(unix), **identity, **fields})
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, ATTEMPTS_FILE), "a", encoding="utf-8") as f:
        f.write(line + "\n")


def record_submission(run_dir: str, job_id: str, executor: str, request, total_kimg=None) -> None:
    """Append the submission of `job_id` (a textgan.launch.slurm.SlurmRequest) to RUN/submissions.jsonl."""
    unix = time.time()
    line = {"event": "submitted", "unix": unix, "utc": _utc(unix), "job_id": str(job_id), "executor": executor,
            "host": socket.gethostname(), "total_kimg": None if total_kimg is None else float(total_kimg),
            **{k: getattr(request, k, None) for k in ("nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task",
                                                      "time_min", "partition", "job_name")}}
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, SUBMISSIONS_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def error_line(error: BaseException) -> str:
    """The last line of an exception as a traceback prints it ("ValueError: ...")."""
    return traceback.format_exception_only(type(error), error)[-1].strip()
