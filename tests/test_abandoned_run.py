"""A run killed before its first checkpoint leaves a run directory that `--resume auto` reuses, once its
job has ended, instead of starting a new numbered run beside it; while the job still runs, the
directory is left alone and the launcher says why (textgan.launch.resume.choose_run_dir)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_train_e2e import ROOT, SUBMIT, TINY, shards, stats_lines  # noqa: F401  (shards is a fixture)

DEMO = os.path.join(ROOT, "configs", "demo.yaml")


def submit_args(outdir, shards_dir, *extra, total_kimg):  # noqa: F811
    settings = TINY + [f"data.shards={shards_dir}", f"schedule.total_kimg={total_kimg}"]
    sets = [x for kv in settings for x in ("--set", kv)]
    return [sys.executable, SUBMIT, "--local", "--config", DEMO, "--outdir", str(outdir), *sets, *extra]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def process_gone(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie runs nothing
    except FileNotFoundError:
        return True


def submitted_jobs(run_dir) -> list:
    """The ids of the jobs submitit recorded in the run's logs/ (<id>_submitted.pkl)."""
    return sorted(n.split("_")[0] for n in os.listdir(os.path.join(run_dir, "logs")) if n.endswith("_submitted.pkl"))


def has_stats(run_dir) -> bool:
    path = os.path.join(run_dir, "stats.jsonl")
    return os.path.exists(path) and os.path.getsize(path) > 0


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_run_killed_before_its_first_checkpoint_is_reused_once_its_job_is_gone(tmp_path, shards):  # noqa: F811
    outdir = tmp_path / "runs"
    run_dir = outdir / "00000-demo"
    # A long job that logs every tick but would save its first checkpoint only after 1000 ticks.
    # (output to a file: the job's processes inherit it, so a pipe would never reach its end)
    with open(tmp_path / "first.log", "w") as log:
        job = subprocess.Popen(submit_args(outdir, shards, "--no-wait", "--set", "schedule.network_snapshot_ticks=1000",
                                           total_kimg=1000), cwd=ROOT, start_new_session=True, stdout=log, stderr=log)
    try:
        assert job.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]  # returns once started
        wait_for(lambda: has_stats(run_dir), 300, "the first tick's stats")
        (job_id,) = submitted_jobs(run_dir)  # a local job's id is its controller's pid

        # Still running, no checkpoint: --resume auto must not put a second job into its directory.
        dry = subprocess.run(submit_args(outdir, shards, "--resume", "auto", "--dry-run", total_kimg=0.032), cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert f"# not reusing {run_dir} (no checkpoint yet): job {job_id}: its local controller process is still " \
               "running" in dry.stdout
        assert f"# run dir: a new one, {outdir}/NNNNN-demo" in dry.stdout
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the whole job: submit.py's session holds the controller and the rank
    wait_for(lambda: process_gone(job_id), 60, "the killed job to be gone")
    assert sorted(os.listdir(outdir)) == ["00000-demo"]
    assert not os.path.exists(run_dir / "checkpoints") or not os.listdir(run_dir / "checkpoints")
    # what a kill in the middle of the first save leaves besides: an incomplete checkpoint
    stale = run_dir / "checkpoints" / "tmp-000001"
    os.makedirs(stale)
    (stale / "weights.pt").write_bytes(b"\0" * 1_000_000)
    old_stats = (run_dir / "stats.jsonl").read_text()

    again = subprocess.run(submit_args(outdir, shards, "--resume", "auto", total_kimg=0.032), cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"reusing {run_dir}: its job ended before the first complete checkpoint" in again.stdout
    assert "checkpoints/tmp-000001 (1.0 MB)" in again.stdout and "stats.jsonl" in again.stdout
    assert sorted(os.listdir(outdir)) == ["00000-demo"]  # no new numbered run beside it
    assert not stale.exists()
    (aside,) = [d for d in os.listdir(run_dir) if d.startswith("abandoned-")]
    assert (run_dir / aside / "stats.jsonl").read_text() == old_stats  # kept, out of the new run's way
    assert [line["Progress/kimg"]["mean"] for line in stats_lines(run_dir)] == [0.016, 0.032]  # the new run only
    assert os.path.exists(run_dir / "checkpoints" / "latest")
    assert json.loads((run_dir / "run.json").read_text())["config_hash"]  # a fresh run's record
    assert len(submitted_jobs(run_dir)) == 2  # both jobs' logs kept in logs/


def _abandoned_run(outdir, job_id: str, slurm: bool):
    """A run dir with nothing but the files submitit writes when it submits a job."""
    logs = outdir / "00000-demo" / "logs"
    os.makedirs(logs)
    (logs / f"{job_id}_submitted.pkl").write_bytes(b"")
    if slurm:
        (logs / f"{job_id}_submission.sh").write_text("#!/bin/bash\n")
    return outdir / "00000-demo"


def test_a_slurm_job_whose_state_cannot_be_learnt_keeps_its_run_dir(tmp_path, monkeypatch):
    from textgan.launch.resume import choose_run_dir

    run_dir = _abandoned_run(tmp_path, "4242", slurm=True)
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    choice = choose_run_dir(str(tmp_path), "demo", "auto")
    assert choice.run_dir is None and not choice.reuse  # a new run instead
    assert choice.notes == [f"not reusing {run_dir} (no checkpoint yet): job 4242: a Slurm job, and squeue is not "
                            "on PATH to tell whether it ended"]


def test_a_local_job_whose_process_is_gone_has_ended(tmp_path):
    from textgan.launch.resume import choose_run_dir

    gone = subprocess.Popen(["true"])
    gone.wait()
    run_dir = _abandoned_run(tmp_path, str(gone.pid), slurm=False)
    choice = choose_run_dir(str(tmp_path), "demo", "auto")
    assert (choice.run_dir, choice.resume, choice.reuse) == (str(run_dir), "auto", True)
    assert choice.notes[-1].startswith(f"reusing {run_dir}: its job ended") and "only its logs" in choice.notes[-1]


@pytest.mark.slurm
def test_a_pending_or_running_slurm_job_keeps_its_run_dir_until_it_ends(slurm_cluster, tmp_path):
    from textgan.train.job_state import live_jobs
    from textgan.launch.resume import choose_run_dir

    run_dir = tmp_path / "00000-demo"
    job = slurm_cluster.executor(run_dir / "logs", timeout_min=5).submit(time.sleep, 600)
    with slurm_cluster.logs_on_failure():
        alive = live_jobs(str(run_dir / "logs"))
        assert len(alive) == 1 and alive[0].startswith(f"job {job.job_id}: Slurm state "), alive  # PENDING/RUNNING
        choice = choose_run_dir(str(tmp_path), "demo", "auto")
        assert choice.run_dir is None and f"not reusing {run_dir}" in choice.notes[0]
        job.cancel()
        slurm_cluster.wait_for_state(job.job_id, {"CANCELLED"})
        wait_for(lambda: not live_jobs(str(run_dir / "logs")), 60, "squeue to report the job ended")
        choice = choose_run_dir(str(tmp_path), "demo", "auto")
        assert (choice.run_dir, choice.reuse) == (str(run_dir), True)


def test_only_runs_of_exactly_this_description_are_candidates(tmp_path):
    from textgan.launch.resume import choose_run_dir

    for name in ("00000-sweep-demo", "00001-my-demo"):  # a sweep directory, another description
        os.makedirs(tmp_path / name / "logs")
    choice = choose_run_dir(str(tmp_path), "demo", "auto")
    assert (choice.run_dir, choice.reuse, choice.notes) == (None, False, [])
