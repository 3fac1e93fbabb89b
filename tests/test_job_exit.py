"""A job that fails must exit: launchers/submit.py --local returns non-zero within seconds of an error raised
in the training loop, shows the error, and leaves no process behind, also with loader workers
(which ignore SIGTERM, so an iterator left alive by the error's traceback used to make the interpreter's
exit wait for them forever).

Real components throughout: submitit's local executor, DeepSpeed engines on gloo, DataLoader workers
(data.num_workers=2), a real non-finite streak (an absurd learning rate) and real damaged samples.
"""

import os
import re
import time

import pytest

from session_job import SessionJob, rank_logs
from shard_fixture import write_shards
from test_requeue import DEMO, REQUEUE
from test_train_e2e import shards  # noqa: F401 (fixture)

# Once a rank has raised, the job (every rank, the controller, submit.py) must be gone within this.
EXIT_WITHIN_S = 30
ERROR_LOGGED = "Submitted job triggered an exception"  # submitit's line when the callable raised


def _sets(*overrides):
    return [x for kv in REQUEUE + ["data.num_workers=2", "metrics.metrics_ticks=1000", *overrides]
            for x in ("--set", kv)]


def _run_until_exit(tmp_path, args, run_dir):
    """Start the job, wait for a rank's error, then give the whole job EXIT_WITHIN_S to end."""
    job = SessionJob(tmp_path, args)
    job.wait_for(lambda: ERROR_LOGGED in rank_logs(run_dir, "_log.err"), timeout=300, what="a rank's error")
    raised = time.time()
    code = job.wait(timeout=EXIT_WITHIN_S)
    return job, code, time.time() - raised


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_nonfinite_stop_with_loader_workers_exits_1_within_seconds_and_leaves_no_process(tmp_path, shards):  # noqa: F811
    run_dir = str(tmp_path / "00000-demo")
    args = ["--config", DEMO, "--outdir", str(tmp_path),
            *_sets(f"data.shards={shards}", "schedule.total_kimg=1", "optim.G_lr=1e30", "optim.D_lr=1e30",
                   "schedule.max_nonfinite_steps=2")]
    job, code, seconds = _run_until_exit(tmp_path, args, run_dir)

    assert code == 1, job.stdout[-2000:] + job.stderr[-2000:]
    assert "training failed:" in job.stderr
    assert re.search(r"rank 0: textgan\.train\.step\.NonFiniteLossError: non-finite .*max_nonfinite_steps=2",
                     job.stderr), job.stderr[-2000:]
    assert job.leftovers(grace=10) == []  # controller, rank and both loader workers are gone
    print(f"exited {seconds:.1f} s after the error")


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_skip_rate_error_on_one_of_two_ranks_ends_the_whole_job_within_seconds(tmp_path):
    # 3 of every 4 samples damaged: a rank's loader raises SkipRateExceeded once it knows the damage,
    # while the other rank waits for it in a collective (gloo's default timeout would be 30 minutes).
    # The failed rank's exit closes its connections, the waiting rank's collective fails at once.
    bad = str(tmp_path / "bad")
    write_shards(bad, n_samples=128, samples_per_shard=32, corrupt=[i for i in range(128) if i % 4])
    run_dir = str(tmp_path / "00000-demo")
    args = ["--config", DEMO, "--outdir", str(tmp_path), "--tasks-per-node", "2",
            *_sets(f"data.shards={bad}", "schedule.total_kimg=1", "data.max_skip_rate=0.05")]
    job, code, seconds = _run_until_exit(tmp_path, args, run_dir)

    assert code == 1, job.stdout[-2000:] + job.stderr[-2000:]
    # every rank's reason is listed, so the root cause shows even when rank 0 only lost its peer
    assert re.search(r"rank [01]: textgan\.data\.loading\.skip_alarm\.SkipRateExceeded: at least \d+ of the 128 samples .* "
                     r"max_skip_rate=0\.05", job.stderr), job.stderr[-2000:]
    assert re.findall(r"^  rank (\d): ", job.stderr, re.M) == ["0", "1"]
    assert job.leftovers(grace=10) == []
    print(f"exited {seconds:.1f} s after the first error")
