"""`textgan monitor` on the real Slurm test cluster (tests/slurm/cluster.sh): training jobs submitted as a user
does (launchers/submit.py), driven into each state, and what the monitor says about each, checked against
sacct and the run's files.

- running, then stalled (SIGSTOP its task: the heartbeat stops; STALLED within --stall-floor + a tick), then
  cancelled (scancel);
- pending (asks for every CPU of the cluster while another job runs: Slurm's reason shown);
- failed (its shards vanish before it starts: the error's last line is the evidence);
- past its time limit with no requeue left (TIMEOUT, its state saved);
- non-finite (an absurd learning rate: NONFINITE, the job FAILED).
Completed, preempted-and-requeued, time-limit requeues, a 2-node job and a job array are checked by the
monitor inside tests/test_slurm_jobs.py, on the jobs that file runs anyway. GPU-hours here are CPU
core-hours (the test cluster has no GPUs): each run's usage must equal sacct's elapsed x CPUs summed over
its instances.
"""

# ruff: noqa: F811  (pytest fixtures imported from other test modules are redefined as arguments)
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from monitor_util import monitor_row, sacct_core_hours
from test_slurm_jobs import job_id_of, sets, submit, the_run_dir, wait_final
from test_train_e2e import TINY, shards  # noqa: F401  (shards is a fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.multiproc]

QUIET = TINY + ["schedule.image_snapshot_ticks=1000", "schedule.network_snapshot_ticks=1000",
                "dist.num_threads=1", "metrics.metrics=[]"]
STALL_FLOOR = 5


def wait_row(run_dir, predicate, what: str, timeout: float = 240, args=()) -> dict:
    deadline = time.time() + timeout
    while True:
        row = monitor_row(run_dir, *args)
        if predicate(row):
            return row
        assert time.time() < deadline, f"{what} not seen after {timeout} s: job {row['job']}, health {row['health']}"
        time.sleep(1)


def start(tmp_path, name, *args, overrides=()):
    outdir = tmp_path / name
    proc = submit(*args, *sets(QUIET + list(overrides)), outdir=outdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return job_id_of(proc.stdout), the_run_dir(outdir)


@pytest.fixture(scope="module")
def jobs(slurm_cluster, shards, tmp_path_factory):
    """Every job of this file, submitted at once so that they run side by side."""
    tmp = tmp_path_factory.mktemp("monitor")
    vanishing = str(tmp / "vanishing-shards")
    shutil.copytree(shards, vanishing)
    out = {
        "running": start(tmp, "running", "--time", "10", "--signal-delay", "60",
                         overrides=[f"data.shards={shards}", "schedule.total_kimg=50"]),
        # starts in 20 s; its shards are gone by then
        "failed": start(tmp, "failed", "--time", "10", "--signal-delay", "60", "--sbatch", "begin=now+20",
                        overrides=[f"data.shards={vanishing}", "schedule.total_kimg=1"]),
        "timeout": start(tmp, "timeout", "--time", "2", "--signal-delay", "30", "--max-requeues", "0",
                         overrides=[f"data.shards={shards}", "schedule.total_kimg=50"]),
        "nonfinite": start(tmp, "nonfinite", "--time", "10", "--signal-delay", "60",
                           overrides=[f"data.shards={shards}", "schedule.total_kimg=5", "optim.G_lr=1e30",
                                      "optim.D_lr=1e30", "schedule.max_nonfinite_steps=2"]),
    }
    for name in os.listdir(vanishing):
        if name.endswith(".tar"):
            os.remove(os.path.join(vanishing, name))
    out["tmp"] = tmp
    yield out
    subprocess.run(["scancel", *[v[0] for k, v in out.items() if k != "tmp"]], timeout=30)


def test_a_running_job_then_stalled_then_cancelled(jobs, shards, tmp_path):
    job_id, run_dir = jobs["running"]
    row = wait_row(run_dir, lambda r: r["job"]["state"] == "RUNNING" and (r["tick"] or 0) >= 3, "RUNNING, 3 ticks")
    assert row["job"]["id"] == job_id and row["job"]["source"] == "slurm"
    assert (row["job"]["nodes"], row["job"]["tasks"], row["job"]["gpus"]) == (1, 1, 0)
    assert row["health"]["state"] == "OK", row["health"]
    assert [(a["attempt"], a["job_id"], a["outcome"], a["state"]) for a in row["attempts"]] == [
        (1, job_id, None, "RUNNING")]
    assert row["total_kimg"] == 50 and 0 < row["progress"] < 1 and row["sec_per_kimg"] > 0 and row["eta_sec"] > 0
    assert row["usage"]["unit"] == "cpu_core_hours" and row["usage"]["cpu_core_hours"] > 0

    # Pending: every CPU of the cluster, while this job holds one
    pending_id, pending_dir = start(tmp_path, "pending", "--nodes", "4", "--tasks-per-node", "4", "--time", "10",
                                    "--signal-delay", "60", overrides=["schedule.total_kimg=1", "schedule.batch_size=64",
                                                                       f"data.shards={shards}"])
    try:
        row = wait_row(pending_dir, lambda r: r["job"]["reason"] in ("Resources", "Priority"),
                       "PENDING with Slurm's reason", timeout=60)
        assert (row["job"]["id"], row["job"]["state"], row["job"]["nodes"], row["job"]["tasks"]) == (
            pending_id, "PENDING", 4, 16)
        assert row["health"]["state"] == "PENDING" and row["job"]["reason"] in row["health"]["evidence"]
        assert row["attempts"] == [] and row["kimg"] is None and row["total_kimg"] == 1
    finally:
        subprocess.run(["scancel", pending_id], timeout=30)

    # Stalled: the training process stops; Slurm still says RUNNING
    beat = json.load(open(os.path.join(run_dir, "heartbeat.json")))
    stall = ("--stall-floor", str(STALL_FLOOR))
    os.kill(beat["pid"], signal.SIGSTOP)
    stopped = time.time()
    try:
        row = wait_row(run_dir, lambda r: r["health"]["state"] == "STALLED", "STALLED", timeout=60, args=stall)
        detected = time.time() - stopped
        assert row["job"]["state"] == "RUNNING"
        assert "last heartbeat" in row["health"]["evidence"] and "bound" in row["health"]["evidence"]
        # within the rule's bound (the floor here: a tick takes about a second) plus the polling margin
        assert STALL_FLOOR < row["heartbeat"]["age_sec"] and detected <= STALL_FLOOR + 15
    finally:
        os.kill(beat["pid"], signal.SIGCONT)
    wait_row(run_dir, lambda r: r["health"]["state"] == "OK", "OK again after SIGCONT", timeout=60, args=stall)

    subprocess.run(["scancel", job_id], check=True, timeout=30)
    assert wait_final(job_id) == {job_id: "CANCELLED"}
    row = wait_row(run_dir, lambda r: r["job"]["state"] == "CANCELLED", "CANCELLED")
    assert row["health"]["state"] == "CANCELLED"
    assert row["usage"]["cpu_core_hours"] == pytest.approx(sacct_core_hours(job_id), abs=1e-6)


def test_a_job_whose_data_vanished_is_failed_with_the_error_line(jobs):
    job_id, run_dir = jobs["failed"]
    assert wait_final(job_id) == {job_id: "FAILED"}
    row = monitor_row(run_dir)
    assert row["job"]["state"] == "FAILED" and row["health"]["state"] == "FAILED"
    (attempt,) = row["attempts"]
    assert attempt["outcome"] == "failed" and attempt["state"] == "FAILED" and attempt["exit_code"] != "0:0"
    assert attempt["error"] and row["health"]["evidence"] == attempt["error"]
    assert attempt["error"].startswith("FileNotFoundError: no readable sample in data.shards=") and (
        "vanishing-shards" in attempt["error"]), attempt["error"]
    assert row["usage"]["cpu_core_hours"] == pytest.approx(sacct_core_hours(job_id), abs=1e-6)


def test_a_job_past_its_time_limit_without_requeues_left_is_timeout(jobs):
    job_id, run_dir = jobs["timeout"]
    final = wait_final(job_id, timeout=300)[job_id]
    assert final in ("FAILED", "TIMEOUT")
    row = monitor_row(run_dir)
    assert row["health"]["state"] == "TIMEOUT", row["health"]
    (attempt,) = row["attempts"]
    if final == "FAILED":  # stopped at the warning, saved, not requeued (max_requeues 0)
        assert (attempt["outcome"], attempt["cause"]) == ("failed", "time_limit")
        assert "not requeued" in row["health"]["evidence"]
        assert os.path.isfile(os.path.join(run_dir, "checkpoints", "latest"))
    assert row["usage"]["cpu_core_hours"] == pytest.approx(sacct_core_hours(job_id), abs=1e-6)
    assert row["usage"]["cpu_core_hours"] > 60 / 3600  # it ran for over a minute on one CPU


def test_an_absurd_learning_rate_is_nonfinite(jobs):
    job_id, run_dir = jobs["nonfinite"]
    assert wait_final(job_id) == {job_id: "FAILED"}
    row = monitor_row(run_dir)
    assert row["job"]["state"] == "FAILED"
    assert row["health"]["state"] == "NONFINITE", row["health"]
    assert "NonFinite" in row["health"]["evidence"] or "non-finite" in row["health"]["evidence"]
    assert [f["state"] for f in row["health"]["all"]][0] == "NONFINITE"
    assert "FAILED" not in [f["state"] for f in row["health"]["all"]]  # the specific cause, not a second finding
