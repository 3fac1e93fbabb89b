"""Conditioning: what the ways of feeding c to the networks cost per training step, side by side in one process.

On the demo recipe (configs/demo.yaml: cGAN, 32 px, batch 32 = 2 x 16, its contrastive terms), CPU, fp32, world 1:
- conditioning/cgan_conditional_bn: seconds per iteration with c setting every batch norm's gain and bias of the
  cgan generator (model.cgan_conditional_bn, on in the recipe) over the same recipe without it.
What each buys in learning is in BENCHMARKS.md "demo learning" (benchmarks/demo_learning.py).
"""

import itertools
import statistics

from bench_train_ranks import demo_cfg, interleaved_step_seconds, shapes_shards, spawn_ranks
from harness import Result

VARIANTS = {
    "plain": ["model.cgan_conditional_bn=false"],
    "conditional_bn": ["model.cgan_conditional_bn=true"],
}


def timing_job(rank, world_size, opts: dict) -> dict:
    """Both variants' engines in this one process, timed in interleaved windows (order rotated)."""
    from textgan.data.loading.loader import train_loader
    from textgan.data.manifest import load_manifest
    from textgan.runtime import Runtime
    from textgan.train.setup import build_training
    from textgan.train.step import TrainState
    from textgan.train.text import TextConditioner

    runtime = Runtime.from_env(device="cpu")
    runtime.init_distributed()
    manifest = load_manifest(opts["shards"])
    base = demo_cfg(opts["shards"])
    text = TextConditioner(base.text_encoder, manifest, runtime.device)
    loader = train_loader(opts["shards"], base.schedule.batch_gpu, rank=0, world_size=1, seed=0, num_workers=0)
    batches = itertools.cycle(list(itertools.islice(iter(loader), 8)))  # held in memory: no data cost
    runs = {v: (build_training(demo_cfg(opts["shards"], *sets), runtime, text=text, manifest=manifest), TrainState())
            for v, sets in VARIANTS.items()}
    seconds = interleaved_step_seconds(runs, batches, opts["warmup"], opts["repeats"], lambda v: opts["window"])
    return {"seconds": seconds}


def run(quick: bool = False):
    opts = {"shards": shapes_shards(32), "warmup": 2, "window": 4 if quick else 24, "repeats": 1 if quick else 5}
    timing = spawn_ranks(timing_job, 1, args=(opts,), threads=2)[0]
    sec = {v: statistics.median(x) for v, x in timing["seconds"].items()}
    result = Result("conditioning/cgan_conditional_bn", "s/iteration, the demo recipe with c setting every batch "
                    "norm of G over the same recipe without it", "plain", "conditional BN", sec["plain"],
                    sec["conditional_bn"], "s/iter")
    result.notes.append(
        f"conditioning: one process (2 torch threads), both variants' engines built alike and timed in turn, "
        f"{opts['window']} iterations per window after {opts['warmup']} warm-up, {opts['repeats']} round(s) with the "
        "order rotated, medians; the same 8 real micro-batches cycled (no data-loading cost). An iteration is the "
        "demo's whole step: G and D phases, lazy R1, the contrastive terms (D and CLIP spaces).")
    return [result]
