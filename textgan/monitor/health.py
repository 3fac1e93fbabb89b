"""The health of a run: every rule below that holds, most severe first, each with the evidence that set it.

    health = {"state", "rule", "evidence", "all": [{"state", "rule", "evidence"}, ...]}   ("OK" when none holds)

The rules (RULES holds their one-line text; tests/test_monitor_health.py pins each one):
- NONFINITE    the latest tick skipped non-finite iterations (Health/nonfinite_skips > 0), or an attempt
               stopped for non-finite losses or weights.
- OOM          Slurm says OUT_OF_MEMORY, or an attempt / the job's log ended with an out-of-memory error.
- FAILED       the job failed (Slurm FAILED / NODE_FAIL / BOOT_FAIL, or its last attempt ended "failed", or a
               --local job vanished without an end: LOST), for a reason none of the rules above names; the
               evidence is the error's last line (the attempt's record, else the job's log).
- TIMEOUT      killed at its time limit (Slurm TIMEOUT), or stopped at its time limit and not requeued
               (max_requeues used up: its state is saved).
- CANCELLED    cancelled (scancel), or stopped by Ctrl-C (--local: INTERRUPTED, state saved).
- STALLED      the job runs but its heartbeat is older than max(STALL_FLOOR_S, 3 x the median tick time of the
               recent ticks): a hung collective, a dead loader, a wedged filesystem. Whatever Slurm says, a
               job that stops beating for that long is not training (the trainer beats every 30 s and at every
               tick, save and metrics pass). In a metrics pass (which beats only at its start) the bound is
               also at least 3 x the previous pass's duration (the heartbeat's last_metrics_sec).
- DIVERGING    D's adversarial loss (Loss/D/adv_real + Loss/D/adv_fake; with loss.kind=rpgan, which reports one
               paired loss and no halves, Loss/D/adv) below DIVERGE_D_LOSS in each of the last 3 ticks while
               G's (Loss/G/adv) rose across them. Why: in a working GAN D cannot separate
               reals from fakes for long, so its loss stays well above zero (the demo recipe, cGAN 160 kimg,
               never went below 0.59; 2 ln 2 = 1.39 is chance); a D loss near zero means D is right about
               nearly every image with near certainty, and a G loss climbing at the same time means G has
               stopped catching up: the collapse that later shows as FID turning upward.
- OVERFITTING  D's loss on held-out reals (Loss/D/val_real, when data.val_shards is given) above its loss on
               training reals (Loss/D/train_real) by more than OVERFIT_GAP in each of the last 3 ticks: D
               memorizes the training images. Without held-out reals, ADA's overfitting heuristic r_t =
               E[sign(D(real))] (Stats/D/real_sign) at or above OVERFIT_RT in each of the last 3 ticks
               (ADA steers r_t to 0.6; near 1, D is sure of every training image).
- DATA         more than DATA_SKIP_RATE of the samples read in the latest tick were skipped as corrupt
               (Data/skipped): broken shards or storage. A healthy shard set skips none.
- PENDING      Slurm has not started the job; the evidence is Slurm's reason.
- PREEMPTED    the run was preempted (its attempts ended for preemptions, or Slurm says PREEMPTED now).
- REQUEUED     the run was requeued at time limits (n times); it goes on by itself.
"""

import os
import re
import statistics
from typing import List, Optional

from textgan.monitor.tail import tail_lines

STALL_FLOOR_S = 300.0
STALL_TICKS = 3.0
DIVERGE_D_LOSS = 0.05
OVERFIT_GAP = 0.3
OVERFIT_RT = 0.9
DATA_SKIP_RATE = 0.001
TREND_TICKS = 3

SEVERITY = ("NONFINITE", "OOM", "FAILED", "TIMEOUT", "CANCELLED", "STALLED", "DIVERGING", "OVERFITTING", "DATA",
            "PENDING", "PREEMPTED", "REQUEUED", "OK")
RULES = {
    "NONFINITE": "non-finite iterations skipped in the latest tick, or stopped for non-finite values",
    "OOM": "ran out of memory",
    "FAILED": "the job failed",
    "TIMEOUT": "killed or stopped at its time limit and not requeued",
    "CANCELLED": "cancelled, or stopped by Ctrl-C",
    "STALLED": "running, but no heartbeat for max(5 min, 3 x the median tick time)",
    "DIVERGING": f"D's adversarial loss < {DIVERGE_D_LOSS} for {TREND_TICKS} ticks while G's rose",
    "OVERFITTING": f"D's loss on held-out reals exceeds its loss on training reals by > {OVERFIT_GAP} for "
                   f"{TREND_TICKS} ticks (without held-out reals: r_t >= {OVERFIT_RT})",
    "DATA": f"more than {DATA_SKIP_RATE:.1%} of the samples read in the latest tick were skipped",
    "PENDING": "waiting in Slurm's queue",
    "PREEMPTED": "preempted and requeued",
    "REQUEUED": "requeued at its time limit",
    "OK": "no rule holds",
}
FAILED_STATES = {"FAILED", "NODE_FAIL", "BOOT_FAIL", "LOST"}
_NONFINITE = re.compile(r"NonFinite|non-finite|not finite", re.IGNORECASE)
_OOM = re.compile(r"OutOfMemory|out of memory|\bMemoryError\b|oom[-_ ]kill", re.IGNORECASE)
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b")
# srun's and slurmstepd's own errors ("slurmstepd-node1: error: Detected 1 oom_kill event in StepId=174.0"); after
# a Python error srun adds "srun: error: node1: task 0: Exited with exit code 1", which says less than the error
_SLURM_ERROR_LINE = re.compile(r"^(srun|slurmstepd(-[\w.-]+)?): error:")


def _mean(line: dict, key: str) -> Optional[float]:
    value = line.get(key)
    return float(value["mean"]) if isinstance(value, dict) and value.get("mean") is not None else None


def _sum(line: dict, key: str) -> Optional[float]:
    """All that the ranks reported under `key` in the tick: a stats line holds their mean and count."""
    value = line.get(key)
    if not isinstance(value, dict) or value.get("mean") is None:
        return None
    return float(value["mean"]) * int(value.get("num") or 1)


def tick_counts(line: dict) -> tuple:
    """(non-finite phase steps skipped, corrupt samples skipped) in the tick of a stats line; None where absent.
    Health/nonfinite_skips is reported every iteration on every rank (all ranks skip together): its sum over
    the ranks, as the tick line in the log counts it; Data/skipped once per rank: its sum over the ranks. The
    ranks: those that reported Timing/sec_per_tick (once per rank per tick)."""
    skips, skipped = _sum(line, "Health/nonfinite_skips"), _sum(line, "Data/skipped")
    ranks = int((line.get("Timing/sec_per_tick") or {}).get("num") or 1)
    return (None if skips is None else round(skips / ranks)), (None if skipped is None else round(skipped))


def _series(recent: list, key: str) -> list:
    return [v for v in (_mean(line, key) for line in recent) if v is not None]


def fmt_s(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def log_error_line(run_dir: str, job_id: Optional[str]) -> Optional[str]:
    """The last error line in the job's rank-0 log (submitit's JOB_0_log.err / .out in RUN/logs, or in the
    sweep's logs/ for a sweep point): the last exception a traceback ended with, else srun's or slurmstepd's
    last error (a task killed without a traceback); None when there is none."""
    if not job_id:
        return None
    for folder in (os.path.join(run_dir, "logs"), os.path.join(os.path.dirname(run_dir), "logs")):
        for suffix in ("err", "out"):
            lines = [line.strip() for line in tail_lines(os.path.join(folder, f"{job_id}_0_log.{suffix}"), 400)]
            errors = ([line for line in lines if _ERROR_LINE.match(line)]
                      or [line for line in lines if _SLURM_ERROR_LINE.match(line)])
            if errors:
                return errors[-1][:500]
    return None


def stall_bound(recent: list, floor: float = STALL_FLOOR_S) -> tuple:
    ticks = _series(recent, "Timing/sec_per_tick")
    median = statistics.median(ticks) if ticks else None
    return max(floor, STALL_TICKS * (median or 0.0)), median


def _finding(state: str, evidence: str) -> dict:
    return {"state": state, "rule": RULES[state], "evidence": evidence}


def _d_adv(line: dict) -> Optional[float]:
    """D's adversarial loss in a tick: its real and fake halves summed, or (loss.kind=rpgan: a pair's loss has no
    halves) the paired Loss/D/adv; None when the tick has neither."""
    real, fake = _mean(line, "Loss/D/adv_real"), _mean(line, "Loss/D/adv_fake")
    if real is not None and fake is not None:
        return real + fake
    return _mean(line, "Loss/D/adv")


def _trend_rules(recent: list) -> List[dict]:
    found = []
    last = recent[-TREND_TICKS:]
    d_loss = [_d_adv(x) for x in last]
    g_loss = [_mean(x, "Loss/G/adv") for x in last]
    if (len(last) == TREND_TICKS and all(d is not None and d < DIVERGE_D_LOSS for d in d_loss)
            and None not in g_loss and all(b > a for a, b in zip(g_loss, g_loss[1:]))):
        found.append(_finding("DIVERGING", f"D's loss {', '.join(f'{d:.3g}' for d in d_loss)} and G's "
                                           f"{', '.join(f'{g:.3g}' for g in g_loss)} over the last {TREND_TICKS} ticks"))
    val, train = _series(last, "Loss/D/val_real"), _series(last, "Loss/D/train_real")
    if len(val) == len(train) == TREND_TICKS:
        gaps = [v - t for v, t in zip(val, train)]
        if all(g > OVERFIT_GAP for g in gaps):
            found.append(_finding("OVERFITTING", "Loss/D/val_real - Loss/D/train_real = "
                                                 f"{', '.join(f'{g:.3g}' for g in gaps)} over the last {TREND_TICKS} ticks"))
    else:
        rt = _series(last, "Stats/D/real_sign")
        if len(rt) == TREND_TICKS and all(r >= OVERFIT_RT for r in rt):
            found.append(_finding("OVERFITTING", f"r_t (Stats/D/real_sign) = {', '.join(f'{r:.3g}' for r in rt)} "
                                                 f"over the last {TREND_TICKS} ticks (no held-out reals)"))
    return found


def _data_rule(recent: list) -> List[dict]:
    if not recent:
        return []
    skipped = tick_counts(recent[-1])[1]
    kimg = _series(recent[-2:], "Progress/kimg")
    if not skipped or len(kimg) < 2:
        return []
    read = (kimg[-1] - kimg[-2]) * 1000 + skipped
    if read > 0 and skipped / read > DATA_SKIP_RATE:
        return [_finding("DATA", f"{skipped:g} of {read:g} samples skipped in the latest tick ({skipped / read:.2%})")]
    return []


def _stall_rule(row: dict, recent: list, now: float, floor: float) -> List[dict]:
    if (row.get("job") or {}).get("state") != "RUNNING":
        return []
    bound, median = stall_bound(recent, floor)
    beat = row.get("heartbeat")
    metrics_sec = (beat or {}).get("last_metrics_sec") if (beat or {}).get("phase") == "metrics" else None
    if metrics_sec:  # a metrics pass beats only at its start: allow 3 x the previous pass
        bound = max(bound, STALL_TICKS * metrics_sec)
    started = [a.get("started_unix") for a in row["attempts"] if a.get("started_unix")]
    since = max([t for t in [(beat or {}).get("unix"), started[-1] if started else None] if t], default=None)
    if since is None or now - since <= bound:
        return []
    how = f"max({fmt_s(floor)}, 3 x median tick {fmt_s(median)})" if median else f"{fmt_s(floor)} floor"
    if metrics_sec:
        how = f"max({how}, 3 x the last metrics pass {fmt_s(metrics_sec)})"
    what = (f"last heartbeat {fmt_s(now - beat['unix'])} ago in phase {beat.get('phase')} at "
            f"{float(beat.get('kimg') or 0):g} kimg" if beat else f"no heartbeat since its start {fmt_s(now - since)} ago")
    return [_finding("STALLED", f"{what}; bound {fmt_s(bound)} = {how}")]


def _job_rules(row: dict, run_dir: str) -> List[dict]:
    job = row.get("job") or {}
    state = job.get("state")
    attempts = row["attempts"]
    last = attempts[-1] if attempts else {}
    errors = [a.get("error") for a in attempts[-1:] if a.get("error")]
    found = []
    if any(_NONFINITE.search(e) for e in errors):
        found.append(_finding("NONFINITE", errors[-1]))
    ended_failed = state in FAILED_STATES or state == "OUT_OF_MEMORY" or (state is None and last.get("outcome") == "failed")
    log_error = log_error_line(run_dir, job.get("id")) if ended_failed else None
    if state == "OUT_OF_MEMORY" or any(_OOM.search(e) for e in errors + [log_error or ""]):
        found.append(_finding("OOM", errors[-1] if errors else (log_error or f"Slurm state {state}")))
    time_limit = state == "TIMEOUT" or (last.get("outcome") == "failed" and last.get("cause") == "time_limit")
    if time_limit:
        found.append(_finding("TIMEOUT", f"Slurm state {state}" if state == "TIMEOUT" else
                              f"stopped at its time limit at {last.get('kimg')} kimg, not requeued (state saved): "
                              f"{last.get('error')}"))
    if ended_failed and not found:
        evidence = errors[-1] if errors else log_error or f"Slurm state {state}, exit code {job.get('exit_code')}"
        if state == "LOST":
            evidence = "the job's process is gone and its last attempt recorded no end (killed: SIGKILL, OOM killer?)"
        found.append(_finding("FAILED", evidence))
    if state in ("CANCELLED", "INTERRUPTED"):
        found.append(_finding("CANCELLED", f"stopped by Ctrl-C at {last.get('kimg')} kimg, state saved"
                              if state == "INTERRUPTED" else f"Slurm state CANCELLED at {row.get('kimg')} kimg"))
    if state == "PENDING":
        found.append(_finding("PENDING", f"Slurm's reason: {job.get('reason') or 'none given yet'}"))
    causes = [a.get("cause") or "preemption" for a in attempts if a.get("outcome") == "requeued"]
    if state == "PREEMPTED" or "preemption" in causes:
        found.append(_finding("PREEMPTED", _requeue_evidence(causes, state)))
    elif causes:
        found.append(_finding("REQUEUED", _requeue_evidence(causes, state)))
    return found


def _requeue_evidence(causes: list, state: Optional[str]) -> str:
    parts = [f"{causes.count(c)} {c.replace('_', ' ')}{'s' if causes.count(c) > 1 else ''}"
             for c in ("preemption", "time_limit") if c in causes]
    text = f"requeued {len(causes)} time{'s' if len(causes) != 1 else ''}" + (f": {', '.join(parts)}" if parts else "")
    return text + ("; Slurm says PREEMPTED now" if state == "PREEMPTED" else "")


def assess(row: dict, recent: list, now: float, stall_floor: float = STALL_FLOOR_S) -> dict:
    """The row's "health" entry from its job, attempts and `recent` (the last stats.jsonl lines)."""
    found = _job_rules(row, row["run_dir"])
    skips = tick_counts(recent[-1])[0] if recent else None
    if skips and not any(f["state"] == "NONFINITE" for f in found):
        found.append(_finding("NONFINITE", f"{skips:g} non-finite iterations skipped in tick {row.get('tick')}"))
    running = (row.get("job") or {}).get("state") in ("RUNNING", None)
    found += _stall_rule(row, recent, now, stall_floor)
    if running:  # a finished run's last ticks are history, not a warning
        found += _trend_rules(recent) + _data_rule(recent)
    found.sort(key=lambda f: SEVERITY.index(f["state"]))
    top = found[0] if found else _finding("OK", "")
    return {"state": top["state"], "rule": top["rule"], "evidence": top["evidence"], "all": found}
