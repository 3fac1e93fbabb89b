"""Run directories for the monitor's tests, written by training's own writers, and Slurm's answers as text.

The files are written by textgan.train.heartbeat's real functions (record_submission, record_attempt,
Heartbeat.beat) under a frozen clock, so their fields are exactly those training writes; stats.jsonl lines
are built as StatsWriter writes them from the collector's tick summary ({"num", "mean", "std"} per name: a
stat reported once per iteration per rank has num = iterations x ranks and its mean over all of them).
Slurm's answers are real-format `sacct -P` (SACCT_FIELDS order) and `squeue -o SQUEUE_FORMAT` lines,
parsed by the monitor's own parse_sacct / parse_squeue.

    clock = frozen_clock(monkeypatch)          # the heartbeat module's time.time / time.monotonic
    run = make_run(tmp_path / "00000-demo", [tick_line(1, 4.0), ...])
    submit(run, clock, T0, "174"); start(run, clock, T0 + 10, "174", 1); beat(run, clock, NOW - 30, "174", 1, 8.0, 2)
    row = row_of(run, NOW, sacct=sacct_line("174", "RUNNING"), squeue=SQ_RUNNING)
    states(row) -> ["STALLED", ...]
"""

import json
import os

from textgan.launch.slurm import SlurmRequest
from textgan.monitor.rows import monitor_rows
from textgan.monitor.slurm_jobs import SlurmView, parse_sacct, parse_squeue
from textgan.train import heartbeat as hb

NOW = 1_800_000_000.0   # 2027-01-15
T0 = NOW - 3 * 3600     # the run's submission
ITERATIONS = 16         # iterations per tick in the stats lines below

# One running single-CPU job as squeue and sacct print it (squeue: SQUEUE_FORMAT order; sacct: SACCT_FIELDS).
SQ_RUNNING = "174|RUNNING|None|1|1|N/A|node1|5:00|10:00"
SACCT_RUNNING = ("174|RUNNING|None|0:0|2026-12-01T03:20:40|2026-12-01T03:20:41|Unknown|43|1|1|billing=1,cpu=1,node=1"
                 "||node1|10")


class Clock:
    def __init__(self, t: float):
        self.t = t

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


def frozen_clock(monkeypatch, t: float = T0) -> Clock:
    """The clock textgan.train.heartbeat reads (its `time` module), set by hand."""
    clock = Clock(t)
    monkeypatch.setattr(hb, "time", clock)
    return clock


def stat(mean, num=1) -> dict:
    return {"num": num, "mean": mean, "std": 0.0}


def tick_line(tick, kimg, sec_per_tick=60.0, ranks=1, skips=0, skipped=0, timestamp=NOW - 60, **means) -> dict:
    """A stats.jsonl line as StatsWriter writes the collector's summary of one tick.

    skips: phases skipped as non-finite on each rank this tick (reported per iteration: num = ITERATIONS x
    ranks, mean = skips / ITERATIONS); skipped: corrupt samples skipped by all ranks together (reported once
    per rank per tick: num = ranks, mean = skipped / ranks); Timing/* once per rank per tick; means: other
    stats by name ("Loss/D/adv_real": 0.7), reported per iteration."""
    line = {"Progress/tick": stat(float(tick)), "Progress/kimg": stat(float(kimg)),
            "Data/skipped": stat(skipped / ranks, ranks),
            "Health/nonfinite_skips": stat(skips / ITERATIONS, ITERATIONS * ranks),
            "Progress/lr_multiplier": stat(1.0, ranks), "Timing/eta_sec": stat(0.0)}
    if sec_per_tick is not None:  # None: a line without tick timing (the monitor must not need it)
        line.update({"Timing/sec_per_tick": stat(sec_per_tick, ranks), "Timing/elapsed_sec": stat(sec_per_tick * tick),
                     "Timing/sec_per_kimg": stat(sec_per_tick / 4.0, ranks)})
    line.update({name: stat(value, ITERATIONS * ranks) for name, value in means.items()})
    line["timestamp"] = timestamp
    return dict(sorted(line.items()))


def make_run(run_dir, lines=(), total_kimg=100):
    """A run directory with training's config.yaml (its schedule) and `lines` as stats.jsonl."""
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(f"desc: demo\nschedule:\n  total_kimg: {total_kimg}\n  batch_size: 32\n  kimg_per_tick: 4\n")
    with open(os.path.join(run_dir, "stats.jsonl"), "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return run_dir


def identity(job_id, attempt, executor="slurm", hosts="node1", array_task=None) -> dict:
    """What textgan.train.heartbeat.job_identity returns inside that job."""
    return {"attempt": attempt, "executor": executor, "job_id": str(job_id), "array_task": array_task,
            "hosts": hosts, "restart_count": attempt - 1}


def submit(run_dir, clock, at, job_id, executor="slurm", nodes=1, tasks_per_node=1, gpus_per_node=0,
           cpus_per_task=None, time_min=10, total_kimg=100):
    """The launcher's submission record (textgan.launch.train_cmd calls record_submission the same way)."""
    clock.t = at
    request = SlurmRequest(nodes=nodes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node, time_min=time_min,
                           signal_delay_s=120, max_requeues=3, job_name="textgan-demo", cpus_per_task=cpus_per_task)
    hb.record_submission(str(run_dir), str(job_id), executor, request, total_kimg=total_kimg)


def start(run_dir, clock, at, job_id, attempt, gpus=0, cpus=1, world_size=1, nodes=1, **who):
    """An attempt's start line, as the Trainer writes it (with attempt_resources' fields)."""
    clock.t = at
    hb.record_attempt(str(run_dir), "start", identity(job_id, attempt, **who), resume=None if attempt == 1 else "auto",
                      world_size=world_size, nodes=nodes, device="cuda" if gpus else "cpu", gpus=gpus, cpus=cpus)


def end(run_dir, clock, at, job_id, attempt, outcome, **fields):
    """An attempt's end line: outcome completed | requeued | interrupted | failed, with kimg/cause/error."""
    who = {k: fields.pop(k) for k in ("executor", "hosts", "array_task") if k in fields}
    clock.t = at
    hb.record_attempt(str(run_dir), "end", identity(job_id, attempt, **who), outcome=outcome, **fields)


def beat(run_dir, clock, at, job_id, attempt, kimg, tick, phase="training", **who):
    clock.t = at
    assert hb.Heartbeat(str(run_dir), identity(job_id, attempt, **who)).beat(kimg, tick, phase, force=True)


def sacct_line(job_id, state, elapsed=43, exit_code="0:0", reason="None", ncpus=1, nodes=1, tres=None,
               start="2026-12-01T03:20:41", end="Unknown", node_list="node1", limit=10) -> str:
    """One `sacct -X -D -P -n -o SACCT_FIELDS` line."""
    tres = f"billing={ncpus},cpu={ncpus},node={nodes}" if tres is None else tres
    return "|".join([str(job_id), state, reason, exit_code, "2026-12-01T03:20:40", start, end, str(elapsed),
                     str(nodes), str(ncpus), tres, "", node_list, str(limit)])


def slurm_stub(sacct="", squeue=""):
    """An ask_slurm for monitor_rows: the SlurmView that query() builds from this sacct and squeue output;
    .calls holds the job ids of each call."""
    def ask(job_ids):
        ask.calls.append(list(job_ids))
        return SlurmView(instances=parse_sacct(sacct), live=parse_squeue(squeue), calls=2)

    ask.calls = []
    return ask


def rows_of(run_dirs, now, sacct="", squeue="", **kwargs):
    ask = slurm_stub(sacct, squeue)
    rows, notes = monitor_rows([str(d) for d in run_dirs], now, ask_slurm=ask, **kwargs)
    assert notes == []
    return rows, ask.calls


def row_of(run_dir, now=NOW, sacct="", squeue="", **kwargs) -> dict:
    return rows_of([run_dir], now, sacct, squeue, **kwargs)[0][0]


def states(row) -> list:
    return [f["state"] for f in row["health"]["all"]]


def evidence(row, state) -> str:
    (found,) = [f["evidence"] for f in row["health"]["all"] if f["state"] == state]
    return found


class NonFiniteLossError(RuntimeError):
    """Stands in for textgan.train.step's (importing that module loads torch); error_line names it alike."""


NonFiniteLossError.__module__ = "textgan.train.step"


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError."""


OutOfMemoryError.__module__ = "torch"

NONFINITE_ERROR = hb.error_line(NonFiniteLossError(
    "non-finite Dmain loss for 4 iterations in a row (schedule.max_nonfinite_steps=4) at cur_nimg=12800; stopping. "
    "Those steps were skipped, so the weights and the newest checkpoint are the last good ones"))
OOM_ERROR = hb.error_line(OutOfMemoryError(
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.06 GiB is "
    "free. Including non-PyTorch memory, this process has 78.03 GiB memory in use."))


def submitit_err_log(error: str, job_id="174", frames=("textgan/train/trainer.py", "textgan/runtime.py")) -> str:
    """A submitit job's rank-0 JOB_0_log.err after a Python error: its log lines, the traceback through
    submitit into textgan, the error, then srun's own error line."""
    lines = [f"submitit INFO (2026-12-01 03:20:42,001) - Starting with JobEnvironment(job_id={job_id}, hostname=node1, "
             "local_rank=0(1), node=0(1), global_rank=0(1))",
             f"submitit INFO (2026-12-01 03:20:42,002) - Loading pickle: /scratch/runs/logs/{job_id}_submitted.pkl",
             "submitit ERROR (2026-12-01 03:21:05,310) - Submitted job triggered an exception",
             "Traceback (most recent call last):",
             '  File "<frozen runpy>", line 198, in _run_module_as_main',
             '  File "/opt/venv/lib/python3.11/site-packages/submitit/core/_submit.py", line 11, in <module>',
             "    submitit_main()",
             '  File "/opt/venv/lib/python3.11/site-packages/submitit/core/submission.py", line 55, in process_job',
             "    result = delayed.result()"]
    for i, frame in enumerate(frames):
        lines += [f'  File "/scratch/textgan/{frame}", line {50 + i}, in step', "    out = self.run(batch)"]
    lines += [error, "srun: error: node1: task 0: Exited with exit code 1"]
    return "\n".join(lines) + "\n"
