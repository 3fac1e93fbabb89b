"""The heartbeat's cost against the training step it rides on (goal: <= 0.5% of the step time).

One process builds the demo's training (configs/demo.yaml through build_training, batches held in memory) and
times windows of steps, interleaved: plain steps, and steps followed by a heartbeat that WRITES every step
(force=True: the worst case; training writes every 30 s, and otherwise only compares a clock). Both ratios are
steps/s with the heartbeat over steps/s without.
"""

import itertools
import os
import statistics
import tempfile
import time

from bench_train_ranks import demo_cfg, shapes_shards, spawn_ranks
from harness import Result


def timing_job(rank, world_size, opts: dict) -> dict:
    from textgan.data.loading.loader import train_loader
    from textgan.runtime import Runtime
    from textgan.train.heartbeat import Heartbeat, job_identity
    from textgan.train.setup import build_training
    from textgan.train.step import TrainState, train_step

    runtime = Runtime.from_env(device="cpu")
    runtime.init_distributed()
    cfg = demo_cfg(opts["shards"])
    setup, state = build_training(cfg, runtime), TrainState()
    loader = train_loader(opts["shards"], cfg.schedule.batch_gpu, rank=0, world_size=1, seed=0, num_workers=0)
    batches = itertools.cycle(list(itertools.islice(iter(loader), 8)))  # held in memory: no data cost
    run_dir = tempfile.mkdtemp(prefix="bench-heartbeat-")
    heartbeat = Heartbeat(run_dir, job_identity(attempt=1))

    def window(mode: str) -> float:
        start = time.perf_counter()
        for _ in range(opts["window"]):
            train_step(setup, batches, state)
            if mode != "plain":
                heartbeat.beat(state.cur_nimg / 1000, state.tick, force=mode == "write")
        return opts["window"] / (time.perf_counter() - start)

    window("plain")  # warm-up
    rates = {"plain": [], "check": [], "write": []}
    names = list(rates)
    for rep in range(opts["repeats"]):
        for mode in names[rep % 3:] + names[:rep % 3]:  # the order rotates: no mode always runs first
            rates[mode].append(window(mode))
    start = time.perf_counter()
    for _ in range(1000):
        heartbeat.beat(0.0, 0, force=True)
    write_us = (time.perf_counter() - start) * 1e3
    return {"rates": rates, "write_us": write_us}


def run(quick: bool = False) -> list:
    opts = {"shards": shapes_shards(), "window": 5 if quick else 20, "repeats": 3 if quick else 6}
    (out,) = spawn_ranks(timing_job, 1, args=(opts,), threads=os.cpu_count())
    plain = statistics.median(out["rates"]["plain"])
    notes = [f"a 30 s interval writes once per {30 * plain:.0f} demo steps; the steps/s ratios move by several percent "
             "from window to window on this shared machine, more than the heartbeat costs, so heartbeat/write_share "
             "(the directly timed write over the step) is the number that shows the bound"]
    share = Result(name="heartbeat/write_share", what="one heartbeat write (atomic JSON of ~300 bytes, 1000 timed) "
                   "over one training step of the demo (goal <= 0.005 even when writing every step)",
                   baseline="training step", candidate="heartbeat write", baseline_value=1e3 / plain,
                   candidate_value=out["write_us"] / 1e3, unit="ms")
    return [share] + [Result(name=f"heartbeat/{mode}", what=f"training steps/s with a heartbeat that {what}, over steps/s "
                   "without (demo config, CPU, batches in memory)", baseline="no heartbeat", candidate=mode,
                   baseline_value=plain, candidate_value=statistics.median(out["rates"][mode]), unit="steps/s",
                   notes=notes if mode == "write" else [])
            for mode, what in (("check", "only checks its interval (what nearly every step does)"),
                               ("write", "writes every step (the worst case)"))]
