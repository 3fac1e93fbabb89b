"""textgan.monitor.health: each rule holds at its bound and not just inside it, its evidence names the numbers,
and the most severe rule that holds is the run's state.

Rows come from textgan.monitor.rows.monitor_rows over run directories written by training's own writers
(tests/monitor_fixture.py), joined with a SlurmView parsed from real-format sacct/squeue text (the real
cluster is exercised by tests/test_monitor_slurm.py). Where a rule depends on the clock, `assess` is called
again on the same row with another `now`.
"""

import os

import pytest
from monitor_fixture import (NONFINITE_ERROR, NOW, OOM_ERROR, SACCT_RUNNING, SQ_RUNNING, T0, beat, end, evidence,
                             frozen_clock, identity, make_run, row_of, sacct_line, start, states, submit,
                             submitit_err_log, tick_line)

from textgan.monitor.health import RULES, SEVERITY, assess
from textgan.monitor.rows import HEALTH_TICKS
from textgan.monitor.tail import tail_json
from textgan.train import heartbeat as hb
from textgan.train.heartbeat import error_line

HEALTHY = {"Loss/D/adv_real": 0.35, "Loss/D/adv_fake": 0.3, "Loss/G/adv": 1.2, "Stats/D/real_sign": 0.6}


@pytest.fixture
def clock(monkeypatch):
    return frozen_clock(monkeypatch)


def healthy(n=3, **overrides):
    return [tick_line(t, 4.0 * t, **dict(HEALTHY, **overrides)) for t in range(1, n + 1)]


def run_of(tmp_path, clock, lines=None, job="174", name="00000-demo", beat_at=NOW - 30, started=True):
    """A run submitted at T0 as `job`, its attempt 1 started, beating at `beat_at` (None: never)."""
    lines = healthy() if lines is None else lines
    run = make_run(str(tmp_path / name), lines)
    submit(run, clock, T0, job)
    if started:
        start(run, clock, T0 + 5, job, 1)
    if beat_at is not None and lines:
        beat(run, clock, beat_at, job, 1, lines[-1]["Progress/kimg"]["mean"], int(lines[-1]["Progress/tick"]["mean"]))
    return run


def running(run, **kwargs):
    return row_of(run, NOW, sacct=SACCT_RUNNING, squeue=SQ_RUNNING, **kwargs)


def ended(run, state, exit_code="1:0", **kwargs):
    return row_of(run, NOW, sacct=sacct_line("174", state, elapsed=3000, exit_code=exit_code,
                                             end="2026-12-01T04:10:41"), **kwargs)


def reassess(row, now, stall_floor=300.0):
    return assess(row, tail_json(os.path.join(row["run_dir"], "stats.jsonl"), HEALTH_TICKS), now, stall_floor)


def test_a_healthy_running_run_is_ok(tmp_path, clock):
    row = running(run_of(tmp_path, clock))
    assert (row["job"]["id"], row["job"]["state"], row["job"]["source"]) == ("174", "RUNNING", "slurm")
    assert row["health"] == {"state": "OK", "rule": RULES["OK"], "evidence": "", "all": []}


# NONFINITE ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ranks", [1, 2])
def test_nonfinite_holds_for_one_skip_in_the_latest_tick_and_counts_the_skips(tmp_path, clock, ranks):
    # The step reports Health/nonfinite_skips every iteration on every rank: the line's mean is per iteration,
    # the tick's count is mean x num / ranks (as the tick line in the log prints it).
    lines = healthy(2) + [tick_line(3, 12.0, ranks=ranks, skips=2, **HEALTHY)]
    row = running(run_of(tmp_path, clock, lines))
    assert row["health"]["state"] == "NONFINITE" and states(row) == ["NONFINITE"]
    assert row["health"]["evidence"] == "2 non-finite iterations skipped in tick 3"


def test_nonfinite_does_not_hold_without_a_skip_in_the_latest_tick(tmp_path, clock):
    lines = [tick_line(1, 4.0, **HEALTHY), tick_line(2, 8.0, skips=3, **HEALTHY),
             tick_line(3, 12.0, skips=0, **HEALTHY)]
    assert states(running(run_of(tmp_path, clock, lines))) == []


def test_nonfinite_holds_for_an_attempt_stopped_by_non_finite_losses_and_failed_is_not_added(tmp_path, clock):
    run = run_of(tmp_path, clock)
    end(run, clock, NOW - 600, "174", 1, "failed", error=NONFINITE_ERROR)
    row = ended(run, "FAILED")
    assert NONFINITE_ERROR.startswith("textgan.train.step.NonFiniteLossError: non-finite Dmain loss")
    assert row["job"]["state"] == "FAILED" and states(row) == ["NONFINITE"]
    assert row["health"]["evidence"] == NONFINITE_ERROR


def test_nonfinite_skips_outrank_a_failure_for_another_reason(tmp_path, clock):
    error = error_line(FileNotFoundError("data.shards: no shard matches /scratch/shards/coco64-{000000..000063}.tar"))
    run = run_of(tmp_path, clock, healthy(2) + [tick_line(3, 12.0, skips=1, **HEALTHY)])
    end(run, clock, NOW - 600, "174", 1, "failed", error=error)
    row = ended(run, "FAILED")
    assert states(row) == ["NONFINITE", "FAILED"] and row["health"]["state"] == "NONFINITE"
    assert evidence(row, "FAILED") == error


# OOM ----------------------------------------------------------------------------------------------------------

def test_oom_holds_for_slurms_out_of_memory_and_explains_the_failure(tmp_path, clock):
    row = ended(run_of(tmp_path, clock), "OUT_OF_MEMORY", exit_code="0:125")  # killed: no end recorded
    assert row["job"]["state"] == "OUT_OF_MEMORY" and states(row) == ["OOM"]
    assert row["health"]["evidence"] == "Slurm state OUT_OF_MEMORY"


def test_oom_holds_for_an_attempt_that_ended_with_cuda_out_of_memory(tmp_path, clock):
    run = run_of(tmp_path, clock)
    end(run, clock, NOW - 600, "174", 1, "failed", error=OOM_ERROR)
    row = ended(run, "FAILED")
    assert OOM_ERROR.startswith("torch.OutOfMemoryError: CUDA out of memory.")
    assert states(row) == ["OOM"] and row["health"]["evidence"] == OOM_ERROR


def test_another_cuda_memory_error_is_a_failure_not_an_oom(tmp_path, clock):
    error = "RuntimeError: CUDA error: an illegal memory access was encountered"
    run = run_of(tmp_path, clock)
    end(run, clock, NOW - 600, "174", 1, "failed", error=error)
    row = ended(run, "FAILED")
    assert states(row) == ["FAILED"] and row["health"]["evidence"] == error


KERNEL_OOM = ("slurmstepd-gpu3: error: Detected 1 oom_kill event in StepId=174.batch. Some of the step tasks have "
              "been OOM Killed.")


@pytest.mark.parametrize("log, said", [
    (submitit_err_log(OOM_ERROR), OOM_ERROR),  # the traceback's error, not srun's "Exited with exit code 1" after it
    ("submitit INFO (2026-12-01 03:20:42,001) - Starting with JobEnvironment(job_id=174, hostname=gpu3)\n"
     f"srun: error: gpu3: task 0: Killed\n{KERNEL_OOM}\n", KERNEL_OOM),  # killed by the kernel: no traceback
])
def test_oom_holds_for_an_out_of_memory_error_in_the_jobs_log(tmp_path, clock, log, said):
    run = run_of(tmp_path, clock)  # the attempt died without writing its end
    os.makedirs(os.path.join(run, "logs"))
    with open(os.path.join(run, "logs", "174_0_log.err"), "w") as f:
        f.write(log)
    row = ended(run, "FAILED")
    assert states(row) == ["OOM"] and row["health"]["evidence"] == said


# FAILED -------------------------------------------------------------------------------------------------------

def test_failed_names_the_error_line_of_the_attempt(tmp_path, clock):
    error = error_line(FileNotFoundError("data.shards: no shard matches /scratch/shards/coco64-{000000..000063}.tar"))
    run = run_of(tmp_path, clock)
    end(run, clock, NOW - 600, "174", 1, "failed", error=error, kimg=12.0)
    row = ended(run, "FAILED")
    assert row["attempts"][0]["state"] == "FAILED" and row["attempts"][0]["exit_code"] == "1:0"
    assert states(row) == ["FAILED"] and row["health"]["rule"] == RULES["FAILED"]
    assert row["health"]["evidence"] == error == ("FileNotFoundError: data.shards: no shard matches "
                                                  "/scratch/shards/coco64-{000000..000063}.tar")


@pytest.mark.parametrize("sweep", [False, True])
def test_failed_without_an_error_record_names_the_last_exception_in_the_jobs_log(tmp_path, clock, sweep):
    # The job failed before its attempt was recorded (the runtime refused the environment): only its log knows.
    # A sweep point's log is in the sweep's logs/ (one submitit folder for the array), named ARRAY_TASK_0_log.err.
    job = "175_3" if sweep else "174"
    run = run_of(tmp_path / "00001-sweep-lr" if sweep else tmp_path, clock, lines=[], job=job,
                 name="00003-lr0.01" if sweep else "00000-demo", started=False)
    logs = os.path.join(os.path.dirname(run) if sweep else run, "logs")
    os.makedirs(logs)
    error = "ValueError: RANK=1 but WORLD_SIZE=1: the job's tasks disagree with its environment"
    with open(os.path.join(logs, f"{job}_0_log.err"), "w") as f:
        f.write(submitit_err_log(error, job_id=job))
    with open(os.path.join(logs, f"{job}_0_log.out"), "w") as f:
        f.write("training run /scratch/runs/00000-demo, attempt 1\n")
    row = row_of(run, NOW, sacct=sacct_line(job, "FAILED", elapsed=25, exit_code="1:0"))
    assert row["attempts"] == [] and row["job"]["id"] == job and row["job"]["state"] == "FAILED"
    assert states(row) == ["FAILED"] and row["health"]["evidence"] == error


@pytest.mark.parametrize("state, exit_code", [("FAILED", "1:0"), ("NODE_FAIL", "0:0")])
def test_failed_without_any_error_line_names_slurms_state_and_exit_code(tmp_path, clock, state, exit_code):
    row = ended(run_of(tmp_path, clock), state, exit_code=exit_code)
    assert states(row) == ["FAILED"] and row["health"]["evidence"] == f"Slurm state {state}, exit code {exit_code}"


def test_a_completed_run_is_ok_and_its_last_ticks_are_history(tmp_path, clock):
    collapsing = [tick_line(t, 4.0 * t, **{"Loss/D/adv_real": 0.01, "Loss/D/adv_fake": 0.01, "Loss/G/adv": 2.0 + t,
                                           "Stats/D/real_sign": 0.99}) for t in (1, 2, 3)]
    run = run_of(tmp_path, clock, collapsing)
    end(run, clock, NOW - 600, "174", 1, "completed", kimg=12.0)
    row = ended(run, "COMPLETED", exit_code="0:0")
    assert row["job"]["state"] == "COMPLETED" and states(row) == [] and row["health"]["state"] == "OK"


# TIMEOUT ------------------------------------------------------------------------------------------------------

def test_timeout_holds_for_slurms_timeout(tmp_path, clock):
    row = ended(run_of(tmp_path, clock), "TIMEOUT", exit_code="0:0")
    assert states(row) == ["TIMEOUT"] and row["health"]["evidence"] == "Slurm state TIMEOUT"


def test_timeout_instead_of_failed_for_a_stop_at_the_time_limit_without_a_requeue(tmp_path, clock):
    error = ("textgan.train.preempt.JobNotRequeued: training stopped for a preemption/time limit and its state is "
             "saved, but the job was not requeued (submitit's handler returned without requeueing); continue with "
             "--resume RUN_DIR")
    run = run_of(tmp_path, clock)
    end(run, clock, NOW - 600, "174", 1, "failed", error=error, kimg=12.0, cause="time_limit")
    row = ended(run, "FAILED")
    assert states(row) == ["TIMEOUT"]
    assert row["health"]["evidence"] == f"stopped at its time limit at 12.0 kimg, not requeued (state saved): {error}"


def test_a_preemption_without_a_requeue_is_a_failure_not_a_timeout(tmp_path, clock):
    error = "textgan.train.preempt.JobNotRequeued: training stopped for a preemption/time limit (...)"
    run = run_of(tmp_path, clock)
    end(run, clock, NOW - 600, "174", 1, "failed", error=error, kimg=12.0, cause="preemption")
    row = ended(run, "FAILED")
    assert states(row) == ["FAILED"] and row["health"]["evidence"] == error


# CANCELLED ----------------------------------------------------------------------------------------------------

def test_cancelled_holds_for_scancel(tmp_path, clock):
    row = ended(run_of(tmp_path, clock), "CANCELLED by 1000", exit_code="0:15")
    assert row["job"]["state"] == "CANCELLED" and states(row) == ["CANCELLED"]
    assert row["health"]["evidence"] == "Slurm state CANCELLED at 12.0 kimg"


# STALLED ------------------------------------------------------------------------------------------------------

def test_stalled_at_the_floor_when_three_median_ticks_are_shorter(tmp_path, clock):
    row = running(run_of(tmp_path, clock))  # ticks of 60 s: 3 x 60 < the 300 s floor; beat 30 s ago
    assert states(row) == []
    beat_at = row["heartbeat"]["unix"]
    assert reassess(row, beat_at + 300)["all"] == []
    late = reassess(row, beat_at + 301)
    assert late["state"] == "STALLED" and late["rule"] == RULES["STALLED"]
    assert late["evidence"] == ("last heartbeat 5:01 ago in phase training at 12 kimg; "
                                "bound 5:00 = max(5:00, 3 x median tick 1:00)")
    assert reassess(row, beat_at + 180, stall_floor=60)["all"] == []  # --stall-floor 60: now 3 x 60 s = 180 s
    assert reassess(row, beat_at + 181, stall_floor=60)["evidence"] == (
        "last heartbeat 3:01 ago in phase training at 12 kimg; bound 3:00 = max(1:00, 3 x median tick 1:00)")


def test_stalled_at_three_median_ticks_when_they_exceed_the_floor(tmp_path, clock):
    lines = [tick_line(t, 4.0 * t, sec_per_tick=s, **HEALTHY) for t, s in ((1, 100.0), (2, 400.0), (3, 200.0))]
    row = running(run_of(tmp_path, clock, lines))
    beat_at = row["heartbeat"]["unix"]
    assert reassess(row, beat_at + 600)["all"] == []  # median 200 s: bound 600 s
    late = reassess(row, beat_at + 601)
    assert [f["state"] for f in late["all"]] == ["STALLED"]
    assert late["evidence"] == ("last heartbeat 10:01 ago in phase training at 12 kimg; "
                                "bound 10:00 = max(5:00, 3 x median tick 3:20)")


def test_stalled_in_a_metrics_pass_allows_three_times_the_previous_pass(tmp_path, clock):
    run = run_of(tmp_path, clock, beat_at=None)
    heartbeat = hb.Heartbeat(run, identity("174", 1))
    heartbeat.extra["last_metrics_sec"] = 400.0  # as the loop records it after a pass
    clock.t = NOW - 30
    assert heartbeat.beat(12.0, 3, "metrics", force=True)
    row = running(run)
    assert states(row) == [] and row["heartbeat"]["last_metrics_sec"] == 400.0
    assert reassess(row, NOW - 30 + 1200)["all"] == []  # 3 x 400 s, over the 300 s floor and 3 x 60 s ticks
    assert reassess(row, NOW - 30 + 1201)["evidence"] == (
        "last heartbeat 20:01 ago in phase metrics at 12 kimg; "
        "bound 20:00 = max(max(5:00, 3 x median tick 1:00), 3 x the last metrics pass 6:40)")
    heartbeat.beat(12.0, 3, "training", force=True)  # back to training: the ticks' bound again
    assert reassess(running(run), NOW - 30 + 301)["state"] == "STALLED"
    first = hb.Heartbeat(run, identity("174", 1))  # the first pass has no previous one: the ticks' bound
    first.beat(12.0, 3, "metrics", force=True)
    assert reassess(running(run), NOW - 30 + 301)["state"] == "STALLED"


def test_stalled_before_the_first_tick_uses_the_floor_alone(tmp_path, clock):
    run = run_of(tmp_path, clock, lines=[], beat_at=None)
    beat(run, clock, NOW - 30, "174", 1, 0.0, 0, phase="starting")
    row = running(run)
    assert states(row) == []
    assert reassess(row, NOW - 30 + 60, stall_floor=60)["all"] == []
    assert reassess(row, NOW - 30 + 61, stall_floor=60)["evidence"] == (
        "last heartbeat 1:01 ago in phase starting at 0 kimg; bound 1:00 = 1:00 floor")


def test_stalled_without_any_heartbeat_counts_from_the_attempts_start(tmp_path, clock):
    row = running(run_of(tmp_path, clock, lines=[], beat_at=None))
    started = row["attempts"][0]["started_unix"]
    assert started == T0 + 5 and row["heartbeat"] is None
    assert reassess(row, started + 300)["all"] == []
    assert reassess(row, started + 301)["evidence"] == "no heartbeat since its start 5:01 ago; bound 5:00 = 5:00 floor"


def test_a_fresh_heartbeat_is_ok_and_a_job_not_running_is_never_stalled(tmp_path, clock):
    run = run_of(tmp_path, clock, beat_at=NOW - 3 * 3600 + 60)  # beat 3 h ago
    assert states(running(run)) == ["STALLED"]
    pending = row_of(run, NOW, squeue="174|PENDING|BeginTime|1|1|N/A||0:00|10:00")  # requeued, waiting
    assert states(pending) == ["PENDING"]
    beat(run, clock, NOW - 10, "174", 1, 12.0, 3)
    assert states(running(run)) == []


# DIVERGING ----------------------------------------------------------------------------------------------------

def adversarial(d_real, d_fake, g, skipped=0):
    return [tick_line(t, 4.0 * t, skipped=skipped if t == 3 else 0, **{
        "Loss/D/adv_real": r, "Loss/D/adv_fake": f, "Loss/G/adv": gl, "Stats/D/real_sign": 0.6})
            for t, r, f, gl in zip((1, 2, 3), d_real, d_fake, g)]


def test_diverging_holds_when_d_wins_for_three_ticks_while_g_rises(tmp_path, clock):
    row = running(run_of(tmp_path, clock, adversarial((0.01, 0.01, 0.005), (0.02, 0.015, 0.01), (3.0, 3.5, 4.25))))
    assert states(row) == ["DIVERGING"]
    assert row["health"]["evidence"] == "D's loss 0.03, 0.025, 0.015 and G's 3, 3.5, 4.25 over the last 3 ticks"


def test_diverging_reads_the_paired_d_loss_of_rpgan_runs(tmp_path, clock):
    # loss.kind=rpgan reports one loss per (real, fake) pair, Loss/D/adv, and no real and fake halves
    def paired(d, g):
        return [tick_line(t, 4.0 * t, **{"Loss/D/adv": dl, "Loss/G/adv": gl, "Stats/D/real_sign": 0.6})
                for t, dl, gl in zip((1, 2, 3), d, g)]

    row = running(run_of(tmp_path / "a", clock, paired((0.03, 0.02, 0.01), (3.0, 3.5, 4.25))))
    assert states(row) == ["DIVERGING"]
    assert row["health"]["evidence"] == "D's loss 0.03, 0.02, 0.01 and G's 3, 3.5, 4.25 over the last 3 ticks"
    assert states(running(run_of(tmp_path / "b", clock, paired((0.03, 0.05, 0.01), (3.0, 3.5, 4.25))))) == []


@pytest.mark.parametrize("d_real, d_fake, g", [
    ((0.01, 0.025, 0.005), (0.02, 0.025, 0.01), (3.0, 3.5, 4.25)),  # D's loss exactly 0.05 in one tick
    ((0.01, 0.01, 0.005), (0.02, 0.015, 0.01), (3.0, 3.5, 3.5)),    # G flat over the last two
    ((0.35, 0.01, 0.005), (0.3, 0.015, 0.01), (3.0, 3.5, 4.25)),    # 2 of 3 ticks
])
def test_diverging_does_not_hold_at_the_bound(tmp_path, clock, d_real, d_fake, g):
    assert states(running(run_of(tmp_path, clock, adversarial(d_real, d_fake, g)))) == []


# OVERFITTING --------------------------------------------------------------------------------------------------

def gaps(val, train=0.2, real_sign=0.6):
    return [tick_line(t, 4.0 * t, **dict(HEALTHY, **{"Loss/D/val_real": v, "Loss/D/train_real": train,
                                                     "Stats/D/real_sign": real_sign}))
            for t, v in zip((1, 2, 3), val)]


def test_overfitting_holds_when_held_out_reals_lose_by_more_than_0_3_for_three_ticks(tmp_path, clock):
    row = running(run_of(tmp_path, clock, gaps((0.6, 0.7, 0.8))))
    assert states(row) == ["OVERFITTING"]
    assert row["health"]["evidence"] == "Loss/D/val_real - Loss/D/train_real = 0.4, 0.5, 0.6 over the last 3 ticks"


@pytest.mark.parametrize("lines", [
    gaps((0.6, 0.5, 0.8)),                   # a gap of exactly 0.3 in one tick
    gaps((0.2, 0.7, 0.8)),                   # 2 of 3 ticks
    gaps((0.3, 0.3, 0.3), real_sign=0.99),   # held-out reals given: r_t is not the test
])
def test_overfitting_by_held_out_loss_does_not_hold_at_the_bound(tmp_path, clock, lines):
    assert states(running(run_of(tmp_path, clock, lines))) == []


def test_overfitting_without_held_out_reals_holds_for_r_t_at_0_9_for_three_ticks(tmp_path, clock):
    row = running(run_of(tmp_path, clock, [tick_line(t, 4.0 * t, **dict(HEALTHY, **{"Stats/D/real_sign": r}))
                                            for t, r in ((1, 0.9), (2, 0.95), (3, 0.9))]))
    assert states(row) == ["OVERFITTING"]
    assert row["health"]["evidence"] == ("r_t (Stats/D/real_sign) = 0.9, 0.95, 0.9 over the last 3 ticks "
                                         "(no held-out reals)")


@pytest.mark.parametrize("r_t", [(0.9, 0.95, 0.8999), (0.6, 0.95, 0.95)])
def test_overfitting_by_r_t_does_not_hold_just_below_or_for_two_ticks(tmp_path, clock, r_t):
    lines = [tick_line(t, 4.0 * t, **dict(HEALTHY, **{"Stats/D/real_sign": r})) for t, r in zip((1, 2, 3), r_t)]
    assert states(running(run_of(tmp_path, clock, lines))) == []


# DATA ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ranks", [1, 2])
def test_data_holds_above_0_1_percent_of_the_samples_read_in_the_latest_tick(tmp_path, clock, ranks):
    # 2 kimg delivered in the tick (4.0 -> 6.0); the skipped samples were read too. Data/skipped is reported once
    # per rank: the tick's count is mean x num.
    def lines(skipped):
        return [tick_line(1, 2.0, ranks=ranks, **HEALTHY), tick_line(2, 4.0, ranks=ranks, skipped=50, **HEALTHY),
                tick_line(3, 6.0, ranks=ranks, skipped=skipped, **HEALTHY)]

    assert states(running(run_of(tmp_path, clock, lines(2), name="below"))) == []  # 2 / 2002 = 0.0999%
    row = running(run_of(tmp_path, clock, lines(3), name="above"))                 # 3 / 2003 = 0.1498%
    assert states(row) == ["DATA"]
    assert row["health"]["evidence"] == "3 of 2003 samples skipped in the latest tick (0.15%)"


# PENDING, PREEMPTED, REQUEUED ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reason, said", [("Resources", "Resources"), ("None", "none given yet")])
def test_pending_names_slurms_reason(tmp_path, clock, reason, said):
    run = run_of(tmp_path, clock, lines=[], started=False)
    row = row_of(run, NOW, squeue=f"174|PENDING|{reason}|4|16|N/A||0:00|10:00",
                 sacct=sacct_line("174", "PENDING", elapsed=0, reason=reason, ncpus=16, nodes=4, start="Unknown",
                                  node_list="None assigned"))
    assert (row["job"]["state"], row["job"]["nodes"], row["job"]["cpus"]) == ("PENDING", 4, 16)
    assert states(row) == ["PENDING"] and row["health"]["evidence"] == f"Slurm's reason: {said}"


def requeued_run(tmp_path, clock, causes, lines=None):
    """Attempts ended requeued with `causes` (None: a record from before causes were written), the last runs."""
    run = run_of(tmp_path, clock, lines)
    for attempt, cause in enumerate(causes, start=1):
        fields = {} if cause is None else {"cause": cause}
        end(run, clock, T0 + 3600 * attempt, "174", attempt, "requeued", kimg=4.0 * attempt, **fields)
        start(run, clock, T0 + 3600 * attempt + 60, "174", attempt + 1)
    beat(run, clock, NOW - 30, "174", len(causes) + 1, 12.0, 3)
    return run


@pytest.mark.parametrize("causes, state, said", [
    (["preemption", "time_limit"], "PREEMPTED", "requeued 2 times: 1 preemption, 1 time limit"),
    (["time_limit", "time_limit"], "REQUEUED", "requeued 2 times: 2 time limits"),
    ([None], "PREEMPTED", "requeued 1 time: 1 preemption"),
])
def test_requeues_are_counted_by_cause(tmp_path, clock, causes, state, said):
    instances = [sacct_line("174", "REQUEUED", elapsed=3500, end="x") for _ in causes] + [SACCT_RUNNING]
    row = row_of(requeued_run(tmp_path, clock, causes), NOW, sacct="\n".join(instances), squeue=SQ_RUNNING)
    assert [a["outcome"] for a in row["attempts"]] == ["requeued"] * len(causes) + [None]
    assert [a["state"] for a in row["attempts"]] == ["REQUEUED"] * len(causes) + ["RUNNING"]
    assert states(row) == [state] and row["health"]["evidence"] == said


def test_preempted_when_slurm_says_so_now(tmp_path, clock):
    row = row_of(run_of(tmp_path, clock), NOW, sacct=sacct_line("174", "PREEMPTED", exit_code="0:15"))
    assert states(row) == ["PREEMPTED"] and row["health"]["evidence"] == "requeued 0 times; Slurm says PREEMPTED now"


# Severity -----------------------------------------------------------------------------------------------------

def test_every_rule_that_holds_is_listed_most_severe_first(tmp_path, clock):
    lines = adversarial((0.01, 0.01, 0.005), (0.02, 0.015, 0.01), (3.0, 3.5, 4.25), skipped=100)
    run = requeued_run(tmp_path, clock, ["preemption"], lines)
    row = row_of(run, NOW, sacct=SACCT_RUNNING, squeue=SQ_RUNNING)
    assert states(row) == ["DIVERGING", "DATA", "PREEMPTED"]
    late = reassess(row, NOW + 3600)
    assert [f["state"] for f in late["all"]] == ["STALLED", "DIVERGING", "DATA", "PREEMPTED"]
    assert late["state"] == "STALLED" and late["evidence"] == late["all"][0]["evidence"]
    assert SEVERITY.index("NONFINITE") < SEVERITY.index("OOM") < SEVERITY.index("FAILED") < SEVERITY.index("TIMEOUT")
