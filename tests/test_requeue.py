"""Preemption and time limits: every rank saves mid-tick at a step boundary, the job requeues itself and
the resumed run's statistics equal an uninterrupted run's (CPU, fp32, ZeRO-2, 2 ranks).

Real components throughout: DeepSpeed engines on gloo, shapes shards, submitit's local executor (its
requeue: the first task exits 144 and the controller starts every task again), and real USR2 signals
sent to the running ranks as Slurm does. The Slurm versions of these tests are in test_slurm_jobs.py.
"""

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dist_util import run_ranks
from test_train_e2e import ROOT, SUBMIT, TINY, deterministic, shards, stats_lines  # noqa: F401 (fixture)
from test_train_multirank import processes_mentioning

from textgan.files import read_jsonl

DEMO = os.path.join(ROOT, "configs", "demo.yaml")
# 2 ranks x batch_gpu 4 = 8 images per iteration; a tick is 4 iterations, the run 2 ticks (8 iterations).
# One thread per rank whatever launched it, so every launcher computes bitwise alike.
REQUEUE = TINY + ["schedule.kimg_per_tick=0.032", "schedule.image_snapshot_ticks=100", "dist.num_threads=1"]
TOTAL_KIMG = 0.064


def _overrides(shards_dir):
    return REQUEUE + [f"data.shards={shards_dir}", f"schedule.total_kimg={TOTAL_KIMG}"]


def train_worker(rank, world_size, overrides, run_dir, resume, stop_at_call):
    """One rank of training_loop; stop_requested says True at its stop_at_call-th question (None: never)."""
    from textgan.config import load_config
    from textgan.runtime import Runtime
    from textgan.train.loop import training_loop

    cfg = load_config(DEMO, overrides)
    runtime = Runtime.from_env()
    runtime.init_distributed()
    os.makedirs(run_dir, exist_ok=True)
    calls = itertools.count(1)
    stop = (lambda: next(calls) == stop_at_call) if stop_at_call else None
    return training_loop(cfg, runtime, run_dir, resume=resume, stop_requested=stop)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shards):  # noqa: F811
    """The stats of an uninterrupted 2-rank run."""
    run_dir = str(tmp_path_factory.mktemp("reference") / "run")
    run_ranks(train_worker, tmp_path_factory.mktemp("ranks"), 2, args=(_overrides(shards), run_dir, None, None))
    lines = stats_lines(run_dir)
    assert [line["Progress/kimg"]["mean"] for line in lines] == [0.032, 0.064]
    return [deterministic(line) for line in lines]


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_stop_mid_tick_saves_the_partial_tick_and_the_resumed_stats_are_exact(tmp_path, shards, reference):  # noqa: F811
    run_dir = str(tmp_path / "run")
    # The 6th question comes before iteration 6: iterations 1-5 are done, tick 2 holds iteration 5 only.
    first = run_ranks(train_worker, tmp_path, 2, args=(_overrides(shards), run_dir, None, 6))
    assert all(r.get("stopped") for r in first) and first[0]["kimg"] == 0.040
    assert [line["Progress/kimg"]["mean"] for line in stats_lines(run_dir)] == [0.032]  # tick 2 not written yet

    ckpt = os.path.join(run_dir, "checkpoints", "000000.040")  # the stop's own tag: 40 images
    for rank in (0, 1):
        partial = torch.load(os.path.join(ckpt, f"rank{rank:05d}.pt"), weights_only=True)["state"]["partial_tick"]
        assert partial["tick_start_nimg"] == 32
        counts = {name: int(m[0]) for name, m in partial["stats"]["tensor"].items()}
        assert counts["Loss/G/adv"] == 1  # this rank's one iteration of tick 2 so far

    second = run_ranks(train_worker, tmp_path, 2, args=(_overrides(shards), run_dir, "auto", None))
    assert second[0]["kimg"] == TOTAL_KIMG and not second[0].get("stopped")
    got = [deterministic(line) for line in stats_lines(run_dir)]
    assert got == reference  # the tick cut in two reports exactly what the whole tick reported


def start_local_job(tmp_path, shards_dir, *extra):  # noqa: F811
    sets = [x for kv in _overrides(shards_dir) for x in ("--set", kv)]
    cmd = [sys.executable, SUBMIT, "--local", "--config", DEMO, "--outdir", str(tmp_path), "--tasks-per-node", "2",
           *sets, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def interrupt_while_training(proc, run_dir, timeout=300):
    """Wait until the training loop runs, then send USR2 to every rank, as Slurm's --signal does."""
    deadline = time.time() + timeout
    logs = os.path.join(run_dir, "logs")
    while not any("training stylegan2" in open(os.path.join(logs, f)).read()
                  for f in (os.listdir(logs) if os.path.isdir(logs) else []) if f.endswith("_0_log.out")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    ranks = [pid for pid in processes_mentioning(os.path.join(run_dir, "logs")) if _is_task(pid)]
    assert len(ranks) == 2, ranks
    for pid in ranks:
        os.kill(pid, signal.SIGUSR2)


def _is_task(pid) -> bool:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"submitit.core._submit" in f.read()


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_signalled_local_job_checkpoints_requeues_itself_and_finishes_with_the_same_stats(tmp_path, shards, reference):  # noqa: F811
    proc = start_local_job(tmp_path, shards)
    run_dir = str(tmp_path / "00000-demo")
    interrupt_while_training(proc, run_dir)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]

    assert "stopped at kimg" in out and "resumed from" in out
    assert out.count("==== textgan attempt 1 ") == 1 and out.count("==== textgan attempt 2 ") == 1
    records = read_jsonl(os.path.join(run_dir, "requeues.jsonl"))
    assert [r["requeue"] for r in records] == [1]
    assert [deterministic(line) for line in stats_lines(run_dir)] == reference
    attempts = read_jsonl(os.path.join(run_dir, "attempts.jsonl"))  # both attempts, without Slurm's history
    assert [(a["event"], a["attempt"], a.get("outcome")) for a in attempts] == [
        ("start", 1, None), ("end", 1, "requeued"), ("start", 2, None), ("end", 2, "completed")]
    assert attempts[2]["resume"] == "auto" and attempts[1]["kimg"] < attempts[3]["kimg"] == TOTAL_KIMG


@pytest.mark.slow
@pytest.mark.multiproc
def test_with_no_requeues_left_the_state_is_saved_and_the_job_says_how_to_resume(tmp_path, shards):  # noqa: F811
    proc = start_local_job(tmp_path, shards, "--set", "schedule.max_requeues=0")  # the config bound
    run_dir = str(tmp_path / "00000-demo")
    interrupt_while_training(proc, run_dir)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-3000:] + err[-3000:]
    assert "max_requeues=0" in out and f"--resume {run_dir}" in out
    assert "training failed" in err and "not requeued" in err
    assert not os.path.exists(os.path.join(run_dir, "requeues.jsonl"))
    attempts = read_jsonl(os.path.join(run_dir, "attempts.jsonl"))
    assert [(a["event"], a.get("outcome")) for a in attempts] == [("start", None), ("end", "failed")]
    assert "not requeued" in attempts[1]["error"]
    from textgan.train.checkpoint import find_latest

    assert "stopped at kimg" in out
    newest = find_latest(os.path.join(run_dir, "checkpoints"))
    for rank in (0, 1):  # the stop's own checkpoint (a tick's checkpoint has no partial tick)
        own = torch.load(os.path.join(newest, f"rank{rank:05d}.pt"), weights_only=True)
        assert "partial_tick" in own["state"]
