"""What the training benchmark's jobs share: local ranks spawned like torchrun's, the demo config,
and a cached shard set of captioned shapes at the demo's resolution.

    results = spawn_ranks(worker, world_size=2, args=(...))   # [rank 0's return value, rank 1's, ...]

`worker(rank, world_size, *args)` must be a module-level function (spawn imports it by name) and
return something json can write. Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT as torchrun would set them, which textgan.runtime.Runtime.from_env reads.
"""

import json
import os
import shutil
import sys
import tempfile
import time
import traceback

import torch.multiprocessing as mp
from common import CACHE

from textgan.runtime import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.yaml")
SHAPES_SAMPLES = 2000  # the train loader resamples shards forever, so a few shards are plenty


def demo_cfg(shards: str, *overrides):
    """configs/demo.yaml (networks, batch, intervals, optimizer) reading `shards`, plus overrides."""
    from textgan.config import load_config

    return load_config(DEMO_CONFIG, [f"data.shards={shards}", "data.build_shapes_if_missing=0", *overrides])


def shapes_shards(resolution: int = 32, n: int = SHAPES_SAMPLES) -> str:
    """A captioned-shapes shard directory (the demo's data), built once and kept in the temp dir."""
    from textgan.data.building.builder import BuildConfig, build

    out = os.path.join(CACHE, f"shapes-{n}-{resolution}")
    if not os.path.exists(os.path.join(out, ".complete")):
        shutil.rmtree(out, ignore_errors=True)
        build(BuildConfig(source="shapes", out=out, resolution=resolution, n=n, seed=0, samples_per_shard=500,
                          workers=1, progress=False), log=lambda *a, **k: None)
        open(os.path.join(out, ".complete"), "w").close()
    return out


# ---------------------------------------------------------------------- timing training steps


def step_seconds(setup, state, batches, n: int) -> float:
    """Mean seconds of n training steps (textgan.train.step.train_step) of one built setup."""
    from textgan.train.step import train_step

    start = time.perf_counter()
    for _ in range(n):
        train_step(setup, batches, state)
    return (time.perf_counter() - start) / n


def interleaved_step_seconds(runs: dict, batches, warmup: int, repeats: int, window) -> dict:
    """{name: [s/step of each window]} for runs {name: (setup, TrainState)} built in one process: each warmed up,
    then timed in turn in windows of window(name) steps, the order rotated every round, so that the machine's
    drift falls on every run alike."""
    for setup, state in runs.values():
        step_seconds(setup, state, batches, warmup)
    seconds = {name: [] for name in runs}
    names = list(runs)
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(step_seconds(*runs[name], batches, window(name)))
    return seconds


# ---------------------------------------------------------------------- spawning ranks


def _rank_entry(worker, rank, world_size, port, out_dir, args, threads):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      DS_ACCELERATOR="cpu")
    import torch
    import torch.distributed as dist

    if threads:
        torch.set_num_threads(threads)
    try:
        result = worker(rank, world_size, *args)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
        if dist.is_initialized():  # leave together: a gloo group torn down by exit can abort a peer
            dist.barrier()
            dist.destroy_process_group()
    except BaseException:
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        sys.exit(1)


def spawn_ranks(worker, world_size: int, args=(), threads=None, timeout: float = 900) -> list:
    """Run worker on `world_size` local processes; returns their results in rank order. threads:
    torch threads per rank (None: torch's default). A failing rank fails the call with its traceback."""
    out_dir = tempfile.mkdtemp(prefix="bench-train-ranks-")
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_rank_entry, args=(worker, r, world_size, port, out_dir, args, threads))
             for r in range(world_size)]
    try:
        for p in procs:
            p.start()
        deadline = time.time() + timeout
        while any(p.is_alive() for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs) or time.time() > deadline:
                break  # one rank died: the others would wait for it forever
            time.sleep(0.2)
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        errors = [open(os.path.join(out_dir, f"rank{r}.err")).read() for r in range(world_size)
                  if os.path.exists(os.path.join(out_dir, f"rank{r}.err"))]
        if errors or any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"benchmark ranks failed (exit codes {[p.exitcode for p in procs]}, "
                               f"timeout {timeout:.0f} s)\n" + "\n".join(errors))
        results = []
        for r in range(world_size):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                results.append(json.load(f))
        return results
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
