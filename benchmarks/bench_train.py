"""Training: ZeRO stages side by side at world 2, what each rank holds, data stall, checkpoint cost.

All on the demo's networks at 32 px (configs/demo.yaml), CPU, gloo, fp32:
- train/zero{1,2,3}: seconds per iteration of stage s over stage 0; one set of engines per stage
  in the same two processes, timed in interleaved windows.
- train/optimizer_bytes{1,2,3} and train/param_bytes{1,2,3}: bytes of Adam state (exp_avg +
  exp_avg_sq of G and D, read from the optimizer's state tensors) and of parameters one rank holds.
- train/data_stall: step time streaming real shards over step time with the same batches held in
  memory (world 1, the demo's own layout).
- train/checkpoint: one full checkpoint save over one tick (world 2, ZeRO 2).
Worker code: bench_train_jobs.py (what runs on each rank), bench_train_ranks.py (spawning, data).
"""

import os
import shutil
import statistics
import tempfile

from bench_train_jobs import stall_job, zero_job
from bench_train_ranks import shapes_shards, spawn_ranks
from harness import Result

STAGES = [0, 1, 2, 3]
# The base model: the contrastive terms (on in the demo recipe) have their own benchmark.
BASE_MODEL = ["contrastive.C_it=0", "contrastive.C_ii=0"]
# The ZeRO comparison wants all four phases: StyleGAN2 (the COCO recipes' architecture) at the demo's size,
# with its path-length phase (the demo's cGAN has no styles, so no Greg, and the config refuses pl_weight there).
ZERO_OVERRIDES = ["model.arch=stylegan2", "loss.pl_weight=2", *BASE_MODEL]
# 2 cores: the trainer computes on one, the loader decodes on the other (the demo's data.num_workers).
STALL_WORKERS = 1
STALL_THREADS = 1
SHARED = ("The machine was shared with a long training run during the measurement; absolute seconds are "
          "inflated and noisy, the side-by-side ratios much less so.")


def _sizes(quick: bool) -> dict:
    if quick:
        return {"warmup": 2, "window": 4, "repeats": 1}
    # 16 iterations hold one full cycle of the demo's lazy regularization (Greg every 4, Dreg every 16).
    return {"warmup": 4, "window": 16, "repeats": 3}


def _mb(n: int) -> float:
    return n / 1e6


def zero_results(quick: bool, shards: str) -> list:
    sizes = _sizes(quick)
    ckpt_dir = tempfile.mkdtemp(prefix="bench-train-ckpt-")
    opts = {"shards": shards, "overrides": ZERO_OVERRIDES, "stages": STAGES, "ckpt_dir": ckpt_dir, "ckpt_stage": 2,
            **sizes}
    try:
        ranks = spawn_ranks(zero_job, 2, args=(opts,), threads=1)  # two ranks on two cores
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    r0 = ranks[0]
    sec = {int(s): statistics.median(v) for s, v in r0["seconds"].items()}
    mem = [{int(s): m for s, m in r["memory"].items()} for r in ranks]
    batch = f"batch {r0['batch_size']} = 2 ranks x batch_gpu {r0['batch_size'] // 2 // r0['accum']}"
    timing = [Result(f"train/zero{s}", f"seconds per iteration at ZeRO {s} over ZeRO 0; world 2, StyleGAN2 32 px, {batch}",
                     "ZeRO 0", f"ZeRO {s}", sec[0], sec[s], "s/iter") for s in STAGES[1:]]
    timing[0].notes.append(
        f"train/zero: 2 processes (gloo, CPU, fp32, 1 torch thread each), StyleGAN2 at the demo's size, 32 px "
        f"({mem[0][0]['numel'] / 1e6:.2f}M parameters in G and D). One engine set per stage (identical seeded "
        f"nets) lives in the same two processes; they are timed in turn, {sizes['window']} iterations per window "
        f"after {sizes['warmup']} warm-up iterations, {sizes['repeats']} round(s) with the stage order rotated "
        f"each round, medians. All four phases run: Gmain, Greg every 4 (model.arch=stylegan2, loss.pl_weight=2; "
        f"the demo itself trains the cGAN, which has no Greg), Dmain, Dreg every 16. ZeRO 3 runs with stage3_param_persistence_threshold=0: the demo's "
        f"layers are all below DeepSpeed's default (1e5 elements), which would keep every parameter whole.")

    adam = [Result(f"train/optimizer_bytes{s}", f"Adam state (exp_avg + exp_avg_sq of G and D) held by one rank "
                   f"at ZeRO {s} over ZeRO 0, world 2", "ZeRO 0", f"ZeRO {s}", _mb(mem[0][0]["adam"]),
                   _mb(mem[0][s]["adam"]), "MB") for s in STAGES[1:]]
    held_by_rank1 = ", ".join(f"ZeRO {s} {_mb(mem[1][s]['adam']):.3f}" for s in STAGES)
    masters = ", ".join(f"ZeRO {s} {_mb(mem[0][s]['master']):.3f} MB" for s in STAGES)
    adam[0].notes.append(
        f"train/optimizer_bytes: counted from the state tensors of the optimizer that steps (engine.optimizer, "
        f"and on stages 1-3 the Adam inside DeepSpeed's ZeRO wrapper, whose parameters are the rank's flat fp32 "
        f"partitions) after training; the table shows rank 0, rank 1 holds (MB): {held_by_rank1}. Partitions are "
        f"padded for alignment, so the ratio can be slightly above 1/2. Stages 1-2 also keep an fp32 copy of the "
        f"rank's partition of the weights as the optimizer's parameters (stage 3 in fp32 steps the partition "
        f"itself): {masters}.")

    params = [Result(f"train/param_bytes{s}", f"parameters (G and D) held by one rank at ZeRO {s} over ZeRO 0, "
                     f"world 2 (only stage 3 partitions them)", "ZeRO 0", f"ZeRO {s}", _mb(mem[0][0]["params"]),
                     _mb(mem[0][s]["params"]), "MB") for s in STAGES[1:]]

    iters_per_tick = r0["kimg_per_tick"] * 1000 / r0["batch_size"]
    checkpoint = Result(
        "train/checkpoint", "one full checkpoint save (both engines with optimizer states, gathered weights, "
        "G_ema, RNG and loader states, fsync, atomic rename) over one tick of the demo; world 2, ZeRO 2",
        "tick", "checkpoint save", sec[2] * iters_per_tick, statistics.median(r0["ckpt_seconds"]), "s")
    checkpoint.notes.append(
        f"train/checkpoint: tick = {iters_per_tick:.0f} iterations (kimg_per_tick {r0['kimg_per_tick']} / batch "
        f"{r0['batch_size']}) x the ZeRO 2 seconds per iteration above; save = median of "
        f"{len(r0['ckpt_seconds'])} save(s), one after each round of windows, of a "
        f"{_mb(r0['ckpt_bytes']):.1f} MB checkpoint. The demo saves every network_snapshot_ticks (4) ticks.")
    return timing + adam + params + [checkpoint]


def stall_result(quick: bool, shards: str) -> Result:
    sizes = _sizes(quick)
    if not quick:
        sizes["window"] = 8  # Dreg counts per mode (each mode has its own iteration counter)
    opts = {"shards": shards, "overrides": BASE_MODEL, "num_workers": STALL_WORKERS, **sizes}
    (r,) = spawn_ranks(stall_job, 1, args=(opts,), threads=STALL_THREADS)
    memory, stream = (statistics.median(r["seconds"][m]) for m in ("memory", "stream"))
    result = Result(
        "train/data_stall", f"seconds per iteration streaming real shards (train_loader, {STALL_WORKERS} worker) "
        f"over the same step fed the same batches held in memory; world 1, the demo as configured (ZeRO 2, "
        f"batch {r['batch_size']} = {r['accum']} x batch_gpu {r['batch_gpu']})", "held in memory", "streaming",
        memory, stream, "s/iter")
    enc = r["encode_seconds"]
    result.notes.append(
        f"train/data_stall: {STALL_WORKERS} loader worker and {r['threads']} torch thread for the trainer because "
        f"the machine has 2 cores: one computes, one decodes (a second worker, or torch's default of one thread "
        f"per core, would oversubscribe them). Windows of {sizes['window']} iterations, {sizes['repeats']} round(s) "
        f"alternating the order, medians; each window starts with one untimed iteration that uses up what the "
        f"worker prefetched (2 batches) while the other mode ran. Both modes encode each batch's captions with "
        f"the text tower (textgan/train/text.py keeps no cache): {enc['memory'] * 1e3:.0f} ms per iteration "
        f"held, {enc['stream'] * 1e3:.0f} ms streaming. Samples skipped: {r['skipped']}.")
    return result


def run(quick: bool = False):
    shards = shapes_shards()
    results = zero_results(quick, shards)
    results.append(stall_result(quick, shards))
    results[-1].notes.append(SHARED)
    return results


if __name__ == "__main__":
    for res in run(quick=os.environ.get("QUICK") == "1"):
        print(res)
