"""Whether a job that submitit recorded in a log folder may still be queued or running.

submitit writes `<id>_submitted.pkl` for every job it submits into the folder, and for a Slurm job
also `<id>_submission.sh` (the batch script); a local job's id is the pid of its controller process
(`python -m submitit.local._local FOLDER`). Used before a run directory is reused, so a job that is
pending or has not saved yet never gets a second job in its directory: whatever cannot be confirmed
as ended counts as alive.
"""

import os
import re
import shutil
import subprocess
from typing import List

SUBMITTED = re.compile(r"^(\d+(?:_\d+)?)_submitted\.pkl$")
# squeue states after which a job no longer runs and will not run again (anything else: alive)
ENDED_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
LOCAL_CONTROLLER = b"submitit.local._local"


def recorded_jobs(log_folder: str) -> List[str]:
    """Job ids submitit recorded in log_folder, in submission order (numerically)."""
    names = os.listdir(log_folder) if os.path.isdir(log_folder) else []
    ids = [m.group(1) for n in names if (m := SUBMITTED.match(n))]
    return sorted(ids, key=lambda i: [int(x) for x in i.split("_")])


def live_jobs(log_folder: str) -> List[str]:
    """'job ID: why it may still run' for every recorded job not known to have ended (empty: none)."""
    alive = []
    for job_id in recorded_jobs(log_folder):
        array_id = job_id.split("_")[0]
        is_slurm = os.path.exists(os.path.join(log_folder, f"{array_id}_submission.sh"))
        why = _slurm_job_alive(job_id) if is_slurm else _local_job_alive(job_id)
        if why:
            alive.append(f"job {job_id}: {why}")
    return alive


def _local_job_alive(job_id: str) -> str:
    try:
        with open(f"/proc/{int(job_id)}/cmdline", "rb") as f:
            cmdline = f.read()
    except FileNotFoundError:
        return ""  # no such process on this machine: the local job has ended
    except OSError:
        return "its process state cannot be read"
    return "its local controller process is still running" if LOCAL_CONTROLLER in cmdline else ""


def _slurm_job_alive(job_id: str) -> str:
    squeue = shutil.which("squeue")
    if squeue is None:
        return "a Slurm job, and squeue is not on PATH to tell whether it ended"
    try:
        done = subprocess.run([squeue, "--noheader", "--jobs", job_id, "--format=%T"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"squeue failed ({e})"
    states = set(done.stdout.split())
    if done.returncode != 0:
        # Slurm forgets a job MinJobAge (300 s by default) after it ended: "Invalid job id specified"
        return "" if "Invalid job id" in done.stderr else f"squeue failed: {done.stderr.strip()[:200]}"
    if not states:
        return ""  # no longer in the queue
    return "" if states <= ENDED_STATES else f"Slurm state {'/'.join(sorted(states))}"
