"""Metrics during training: their throughput and their share of the training time at the default cadence.

One real training run of the demo (configs/demo.yaml: its networks, batch, optimizer, 1 rank, CPU) with
metrics after every tick, so that training ticks and metrics alternate in the same minutes:
- metrics/{shapes_alignment,fid}_throughput: images/s through G_ema generation + scoring / features,
  over the training throughput (images/s of the training step) measured in between.
- metrics/demo_fraction: seconds of the demo's metric (shapes_alignment, 256 samples) per metrics
  interval at the demo's cadence (metrics_ticks 4 x kimg_per_tick 4 = 16 kimg), over the training
  seconds of that interval; metrics/fid_fraction: the same for fid1k_train with the tiny extractor.
The FID uses the tiny registered extractor of tests/metrics_fixture.py (InceptionV3 weights are not
on this machine); Inception's own cost scales this number, see the notes.
"""

import os
import shutil
import statistics
import sys
import tempfile

from bench_train_ranks import DEMO_CONFIG, ROOT, shapes_shards, spawn_ranks
from harness import Result

from textgan.files import read_jsonl

FID = "fid1k_train"
ALIGN = "shapes_alignment"


def metrics_job(rank, world_size, opts: dict) -> dict:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from metrics_fixture import register_tiny_extractor

    from textgan.config import load_config
    from textgan.runtime import Runtime
    from textgan.train.loop import training_loop

    extractor = register_tiny_extractor()
    cfg = load_config(DEMO_CONFIG, [
        f"data.shards={opts['shards']}", "data.build_shapes_if_missing=0", f"schedule.kimg_per_tick={opts['tick_kimg']}",
        f"schedule.total_kimg={opts['tick_kimg'] * opts['ticks']}", "schedule.image_snapshot_ticks=1000",
        "schedule.network_snapshot_ticks=1000", f"metrics.metrics=[{FID},{ALIGN}]", "metrics.metrics_ticks=1",
        f"metrics.feature_extractor={extractor}", f"metrics.cache_dir={opts['run_dir']}/cache"])
    runtime = Runtime.from_env()
    runtime.init_distributed()
    training_loop(cfg, runtime, opts["run_dir"])
    run_dir = opts["run_dir"]
    sec_per_kimg = [line["Timing/sec_per_kimg"]["mean"] for line in read_jsonl(os.path.join(run_dir, "stats.jsonl"))]
    timing = {name: [line["timing"] for line in read_jsonl(os.path.join(run_dir, f"metric-{name}.jsonl"))]
              for name in (FID, ALIGN)}
    import torch

    demo = load_config(DEMO_CONFIG)
    return {"sec_per_kimg": sec_per_kimg, "timing": timing, "threads": torch.get_num_threads(),
            "batch_size": cfg.schedule.batch_size, "demo_interval_kimg": demo.metrics.metrics_ticks *
            demo.schedule.kimg_per_tick, "demo_samples": demo.metrics.num_samples}


def run(quick: bool = False):
    ticks = 3 if quick else 6
    run_dir = tempfile.mkdtemp(prefix="bench-metrics-")
    try:
        out = spawn_ranks(metrics_job, 1, args=({"shards": shapes_shards(32), "run_dir": run_dir,
                                                 "tick_kimg": 0.128 if quick else 0.256, "ticks": ticks},))[0]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    # The first tick and the first metrics pay one-time costs (start-up, reference index, real features).
    sec_per_kimg = statistics.median(out["sec_per_kimg"][1:])
    train_rate = 1000 / sec_per_kimg
    rate = {n: statistics.median(t["images_per_sec"] for t in out["timing"][n][1:]) for n in (FID, ALIGN)}
    seconds = {n: statistics.median(t["seconds"] for t in out["timing"][n][1:]) for n in (FID, ALIGN)}
    interval_kimg = out["demo_interval_kimg"]
    train_seconds = interval_kimg * sec_per_kimg
    align_seconds = seconds[ALIGN] * out["demo_samples"] / out["timing"][ALIGN][-1]["images"]
    setup = (f"demo nets (cgan, 32 px), 1 rank, {out['threads']} torch threads, batch {out['batch_size']}; "
             f"{ticks} training ticks alternating with metrics, medians without the first")
    results = [
        Result("metrics/shapes_alignment_throughput",
               f"images/s of shapes_alignment (G_ema generation + pixel scoring, 256 samples) over training "
               f"images/s; {setup}", "training", "shapes_alignment", train_rate, rate[ALIGN], "images/s"),
        Result("metrics/fid_throughput",
               "images/s of fid1k_train (G_ema generation + tiny extractor features; real features cached) over "
               "training images/s; same run", "training", "fid1k_train", train_rate, rate[FID], "images/s"),
        Result("metrics/demo_fraction",
               f"seconds in the demo's metric (shapes_alignment, {out['demo_samples']} samples) per metrics interval "
               f"at the demo cadence ({interval_kimg:g} kimg) over the training seconds of that interval",
               "training", "metrics", train_seconds, align_seconds, "s"),
        Result("metrics/fid_fraction",
               f"the same for fid1k_train with the tiny extractor at the demo cadence ({interval_kimg:g} kimg)",
               "training", "fid1k_train", train_seconds, seconds[FID], "s"),
    ]
    results[0].notes += [
        f"metrics/*: training {sec_per_kimg:.2f} s/kimg; per metrics run shapes_alignment {seconds[ALIGN]:.2f} s, "
        f"fid1k_train {seconds[FID]:.2f} s. Time in metrics is logged by every run as Timing/metrics_sec and "
        "Timing/metrics_fraction (share of the wall time since the previous metrics).",
        "metrics/fid_*: the tiny extractor is far cheaper than InceptionV3 (299-px input), so an Inception FID "
        "costs more per image, above all on a CPU. The fraction of any cadence follows from the two rates: "
        "(metric samples / metric images/s) / (interval images / training images/s). For the COCO recipes (FID-10k "
        "+ CLIP score on 10k samples each, every 50 ticks = 200 kimg) it stays <= 5% (StyleGAN3's bound for FID-50k) "
        "while each of the two metrics runs at >= 2x the training images/s (10k/r + 10k/r <= 0.05 x 200k/t); "
        "measure it on the GPU with Timing/metrics_fraction. "
        "A best-checkpoint save (train/checkpoint) adds to a metrics run when the value improves.",
    ]
    return results
