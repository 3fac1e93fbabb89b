"""Slurm's view of the runs' jobs: one `squeue` call for the live ones and one `sacct` call for their
history, whatever the number of runs (the monitor refreshes every few seconds over hundreds of runs; a
call per run would load the controller and take minutes).

squeue answers for jobs still in the queue (the controller's word, with the pending reason); sacct for
every job the accounting database holds, each requeued instance on its own line (`-D`). Accounting is
written asynchronously, so a job submitted a second ago may be known to squeue only: squeue wins for
live jobs. Both are parsed from `-P`/`|`-separated output; array jobs are named ARRAYID_TASK (a pending
array's tasks "ID_[0-3,5]" are expanded).
"""

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

SACCT_FIELDS = ("JobID", "State", "Reason", "ExitCode", "Submit", "Start", "End", "ElapsedRaw", "NNodes", "NCPUS",
                "AllocTRES", "ReqTRES", "NodeList", "TimelimitRaw")
# job id, state, reason, nodes, CPUs, GRES per node, node list, elapsed, time limit
SQUEUE_FORMAT = "%i|%T|%r|%D|%C|%b|%N|%M|%l"
TIMEOUT_S = 60
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}


class SlurmUnavailable(RuntimeError):
    """sacct/squeue are missing or do not answer; the message says which and what to do."""


@dataclass
class SlurmView:
    """instances: job id -> its sacct lines, oldest first (a requeued job has one per attempt);
    live: job id -> its squeue line (jobs still in the queue)."""
    instances: Dict[str, List[dict]] = field(default_factory=dict)
    live: Dict[str, dict] = field(default_factory=dict)
    calls: int = 0

    def latest(self, job_id: str) -> Optional[dict]:
        """The job as it is now: its queue line when queued, else its newest accounting line. A job still
        COMPLETING in the queue (its processes being cleaned up) has its final state in accounting already."""
        lines = self.instances.get(job_id)
        live = self.live.get(job_id)
        if live is not None and not (live["state"] == "COMPLETING" and lines and lines[-1]["state"] in ENDED):
            return live
        return lines[-1] if lines else live


def base_id(job_id: str) -> str:
    """The id Slurm takes for a job or a whole array ("123_4" -> "123")."""
    return str(job_id).split("_")[0]


def expand_job_ids(text: str) -> List[str]:
    """sacct/squeue's "123_[0-2,5%2]" -> ["123_0", "123_1", "123_2", "123_5"]; other ids unchanged."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", text)
    if not match:
        return [text]
    out = []
    for part in match.group(2).split("%")[0].split(","):
        low, _, high = part.partition("-")
        out += [f"{match.group(1)}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


def gpus_of(tres: str) -> int:
    """GPUs in a TRES string ("billing=8,cpu=8,gres/gpu=2,node=1" or "gres/gpu:a100=2" -> 2). A cluster that
    accounts GPU types lists the same GPUs twice ("gres/gpu:a100=4,gres/gpu=4"): the untyped total counts."""
    untyped = re.findall(r"gres/gpu=(\d+)", tres or "")
    return sum(int(n) for n in untyped or re.findall(r"gres/gpu:[^=,]*=(\d+)", tres or ""))


def unix_of(text: str) -> Optional[float]:
    """sacct's local-time stamp ("2026-12-01T03:15:35") as unix time; None for Unknown/None/empty."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except (TypeError, ValueError):
        return None


def duration_s(text: str) -> Optional[int]:
    """squeue's "[D-]HH:MM:SS" / "MM:SS" as seconds; None for UNLIMITED, INVALID, N/A."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", (text or "").strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(x or 0) for x in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _int(text) -> Optional[int]:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _run(cmd: list) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmUnavailable(f"`{cmd[0]}` is not installed here: Slurm job states, pending reasons and "
                               "accounting are not shown (run the monitor on a login node of the cluster, or "
                               "install slurm-client); what the run directories hold is shown")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"`{cmd[0]}` did not answer within {TIMEOUT_S} s; Slurm states are not shown")
    if proc.returncode != 0 and cmd[0] == "squeue" and "Invalid job id" in proc.stderr:
        return ""  # none of the jobs is in the queue any more (squeue fails only when all are unknown)
    if proc.returncode != 0:
        error = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise SlurmUnavailable(f"`{cmd[0]}` failed (exit {proc.returncode}: {error}); Slurm states are not shown")
    return proc.stdout


def parse_sacct(text: str) -> Dict[str, List[dict]]:
    instances: Dict[str, List[dict]] = {}
    for line in text.splitlines():
        values = line.split("|")
        if len(values) != len(SACCT_FIELDS):
            continue
        f = dict(zip(SACCT_FIELDS, values))
        tres = f["AllocTRES"] or f["ReqTRES"]
        for job_id in expand_job_ids(f["JobID"]):
            instances.setdefault(job_id, []).append({
                "job_id": job_id, "state": f["State"].split()[0] if f["State"] else None,
                "reason": None if f["Reason"] in ("", "None") else f["Reason"], "exit_code": f["ExitCode"] or None,
                "submit": unix_of(f["Submit"]), "start": unix_of(f["Start"]), "end": unix_of(f["End"]),
                "elapsed_sec": _int(f["ElapsedRaw"]), "nodes": _int(f["NNodes"]), "cpus": _int(f["NCPUS"]),
                "gpus": gpus_of(tres), "node_list": None if f["NodeList"] in ("", "None assigned") else f["NodeList"],
                "time_limit_min": _int(f["TimelimitRaw"])})
    for lines in instances.values():  # -D lists requeued instances; order them by when they started
        lines.sort(key=lambda x: (x["start"] or x["submit"] or float("inf")))
    return instances


def parse_squeue(text: str) -> Dict[str, dict]:
    live = {}
    for line in text.splitlines():
        values = line.split("|")
        if len(values) != 9:
            continue
        job_id, state, reason, nodes, cpus, gres, node_list, elapsed, limit = values
        for one in expand_job_ids(job_id):
            live[one] = {"job_id": one, "state": state, "reason": None if reason in ("", "None") else reason,
                         "exit_code": None, "nodes": _int(nodes), "cpus": _int(cpus),
                         "gpus": sum(int(n) for n in re.findall(r"gpu(?::[^:,(]*)?:(\d+)", gres)) * (_int(nodes) or 1),
                         "node_list": node_list or None, "elapsed_sec": duration_s(elapsed),
                         "time_limit_min": None if duration_s(limit) is None else duration_s(limit) // 60}
    return live


def query(job_ids) -> SlurmView:
    """Ask Slurm about `job_ids` (array tasks as "ID_TASK"): one squeue and one sacct call for all of them.
    SlurmUnavailable when a command is missing or fails."""
    ids = sorted({base_id(j) for j in job_ids if j}, key=lambda j: (len(j), j))
    view = SlurmView()
    if not ids:
        return view
    joined = ",".join(ids)
    view.live = parse_squeue(_run(["squeue", "-h", "-r", f"--jobs={joined}", "-o", SQUEUE_FORMAT]))
    view.instances = parse_sacct(_run(["sacct", "-X", "-D", "-P", "-n", "-j", joined, "-o", ",".join(SACCT_FIELDS)]))
    view.calls = 2
    return view
