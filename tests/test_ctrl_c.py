"""Ctrl-C on a --local run: the first press saves at the next step boundary (the preemption path: flag ->
agreement of the ranks -> checkpoint with the unfinished tick), prints the exact command that resumes,
exits 130 without a traceback; the resumed run's statistics equal an uninterrupted run's. A second press
stops the job at once, without saving.

Real components throughout: launchers/submit.py in its own session as a terminal runs it, SIGINT to the
whole process group (submit.py, submitit's local controller, 2 ranks, 2 loader workers each), DeepSpeed
engines on gloo, shapes shards.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest
import torch

from dist_util import run_ranks
from session_job import SessionJob, rank_logs
from test_requeue import DEMO, REQUEUE, train_worker
from test_train_e2e import ROOT, SUBMIT, deterministic, shards, stats_lines  # noqa: F401 (fixture)
from textgan.train.checkpoint import find_latest

# 2 ranks x batch_gpu 4 = 8 images per iteration, 4 iterations per tick, 4 ticks: room for the press to
# land mid-run. Loader workers on, so they must survive the SIGINT until the save.
TOTAL_KIMG = 0.128


def _overrides(shards_dir):
    return REQUEUE + [f"data.shards={shards_dir}", f"schedule.total_kimg={TOTAL_KIMG}", "data.num_workers=2",
                      "metrics.metrics_ticks=1000"]


def _args(tmp_path, shards_dir):
    return ["--config", DEMO, "--outdir", str(tmp_path), "--tasks-per-node", "2",
            *[x for kv in _overrides(shards_dir) for x in ("--set", kv)]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shards):  # noqa: F811
    """The stats of an uninterrupted 2-rank run with the same settings."""
    run_dir = str(tmp_path_factory.mktemp("reference") / "run")
    run_ranks(train_worker, tmp_path_factory.mktemp("ranks"), 2, args=(_overrides(shards), run_dir, None, None))
    return [deterministic(line) for line in stats_lines(run_dir)]


def _start_and_wait_for_training(tmp_path, shards_dir, run_dir):  # noqa: F811
    job = SessionJob(tmp_path, _args(tmp_path, shards_dir))
    job.wait_for(lambda: "tick 1 " in rank_logs(run_dir, "_0_log.out"), what="the first tick")
    return job


@pytest.mark.slow
@pytest.mark.multiproc
def test_ctrl_c_saves_at_the_next_step_prints_the_resume_command_and_the_resumed_stats_are_exact(
        tmp_path, shards, reference):  # noqa: F811
    run_dir = str(tmp_path / "00000-demo")
    job = _start_and_wait_for_training(tmp_path, shards, run_dir)
    job.interrupt()
    code = job.wait(timeout=120)

    out, err = job.stdout, job.stderr
    assert code == 130, out[-3000:] + err[-3000:]
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert "Traceback" not in rank_logs(run_dir, "_log.err")  # the ranks ended cleanly too
    assert "press Ctrl-C again to stop without saving" in err
    assert job.leftovers(grace=10) == []

    saved = find_latest(os.path.join(run_dir, "checkpoints"))
    assert f"stopped by Ctrl-C; the state is saved in {saved}" in err
    for rank in (0, 1):  # the stop's own checkpoint, complete, with the unfinished tick on every rank
        own = torch.load(os.path.join(saved, f"rank{rank:05d}.pt"), weights_only=True)
        assert "partial_tick" in own["state"]
    assert len(stats_lines(run_dir)) < len(reference)  # it did stop before the end

    command = re.search(r"resume with:\n  (.+)\n", err).group(1)
    assert shlex.split(command) == [sys.executable, SUBMIT, "--local", *_args(tmp_path, shards), "--resume", run_dir]
    resumed = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert [deterministic(line) for line in stats_lines(run_dir)] == reference
    with open(os.path.join(run_dir, "attempts.jsonl")) as f:  # the manual resume is the run's second attempt
        attempts = [json.loads(line) for line in f]
    assert [(a["event"], a["attempt"], a.get("outcome")) for a in attempts] == [
        ("start", 1, None), ("end", 1, "interrupted"), ("start", 2, None), ("end", 2, "completed")]
    assert attempts[2]["resume"] is not None  # it resumed (from the saved checkpoint)


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_second_ctrl_c_stops_the_job_at_once_without_a_traceback(tmp_path, shards):  # noqa: F811
    run_dir = str(tmp_path / "00000-demo")
    job = _start_and_wait_for_training(tmp_path, shards, run_dir)
    job.interrupt()
    time.sleep(0.5)  # two presses, not one signal merged into the other
    job.interrupt()
    pressed = time.time()
    code = job.wait(timeout=60)

    out, err = job.stdout, job.stderr
    assert code == 130, out[-3000:] + err[-3000:]
    assert time.time() - pressed < 30
    assert "Traceback" not in out + err
    assert "Ctrl-C again: stopping the job now, without waiting for the save" in err
    assert job.leftovers(grace=5) == []  # the ranks and their workers were killed with the controller
    # What is reported is what is on disk: the stop's checkpoint when the ranks finished it before the
    # second press, else the newest complete one (the first tick's snapshot); either way, how to resume.
    newest = find_latest(os.path.join(run_dir, "checkpoints"))
    assert (f"stopped by Ctrl-C; the state is saved in {newest}" in err
            or f"stopped by Ctrl-C without saving; the newest complete checkpoint is {newest}" in err), err
    assert f"--resume {run_dir}" in err
