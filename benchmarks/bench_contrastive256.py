"""The contrastive terms' cost at the research's size: configs/research/modified1.yaml's terms over
configs/research/base.yaml, on the COCO 256 px recipe's networks, side by side in one process.

Both recipes as shipped (StyleGAN2 size 1.0 at 256 px, ADA at p = 0 as a run starts, path length every 4
iterations, lazy R1 every 16), CPU, fp32, world 1, batch_gpu 2 (what fits this CPU; see SIZES), CLIP
ViT-B/32 (quickgelu) and VGG-16 with seeded random weights saved to files (the cost is the same as with
the real weights, and the shards' features need files to be matched by sha256). The terms: D, CLIP and VGG
structures, image-text and image-image, plus the heterologous ones (h = 0.5; modified1.yaml ships h = 0,
which costs the same: heterologous pairs reuse the rows of the batch). Variants:
  base              the base recipe: no contrastive term
  modified1         the real images' CLIP and VGG features computed on the fly (contrastive.precomputed=never)
  precomputed       read from the shards (contrastive.precomputed=require)
  p112              modified1 with contrastive.perceptual_size=112 (VGG sees 112 px)
  precomputed_p112  precomputed with contrastive.perceptual_size=112 (shards built with --perceptual-size 112)
Each variant's seconds per iteration are assembled over one lazy-regularization cycle from an iteration with
every phase and one with the main phases only (benchmarks/bench_networks.py cycle_seconds).
"""

import os
import time

from bench_networks import (MAIN_PHASES, PHASES, cycle_seconds, median_phases, phase_clock_objective,
                            phase_seconds)
from bench_train_ranks import ROOT, spawn_ranks
from common import CACHE
from harness import Result

CLIP_MODEL = "ViT-B-32-quickgelu"
PERCEPTUAL = "vgg16"
# repeats: iterations with the main phases only per variant, where the terms' whole cost is (the regularization
# phases run the same code in every variant: one iteration with every phase each).
SIZES = {"full": {"resolution": 256, "batch_gpu": 2, "repeats": 3, "overrides": []},
         "quick": {"resolution": 64, "batch_gpu": 4, "repeats": 1, "overrides": ["model.size=0.125",
                                                                                 "data.resolution=64"]}}
VARIANTS = {
    "base": ("base.yaml", []),
    "modified1": ("modified1.yaml", ["contrastive.precomputed=never"]),
    "precomputed": ("modified1.yaml", ["contrastive.precomputed=require"]),
    "p112": ("modified1.yaml", ["contrastive.precomputed=never", "contrastive.perceptual_size=112"]),
    "precomputed_p112": ("modified1.yaml", ["contrastive.precomputed=require", "contrastive.perceptual_size=112"]),
}
# One torch thread, as benchmarks/bench_networks.py: on a shared 2-core machine two threads time the scheduler.
THREADS = 1
SHARD_SAMPLES = 8  # 4 micro-batches of 2, cycled


def _weights() -> dict:
    """Seeded random weights files for CLIP ViT-B/32 and VGG-16, made once in the cache."""
    import open_clip
    import torch
    import torchvision

    paths = {"clip": os.path.join(CACHE, f"{CLIP_MODEL}-seed0.pt"), "vgg": os.path.join(CACHE, "vgg16-seed0.pt")}
    if not all(os.path.exists(p) for p in paths.values()):
        os.makedirs(CACHE, exist_ok=True)
        torch.manual_seed(0)
        torch.save(open_clip.create_model(CLIP_MODEL, pretrained=None).state_dict(), paths["clip"])
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), paths["vgg"])
    return paths


def _shards(resolution: int, weights: dict, perceptual_size: int) -> str:
    """Shapes shards with the CLIP text and image features and the VGG features at perceptual_size."""
    from textgan.data.building.cli import main as build_main

    out = os.path.join(CACHE, f"shapes-{SHARD_SAMPLES}-{resolution}-clipb32-vgg{perceptual_size}")
    if not os.path.exists(os.path.join(out, ".complete")):
        code = build_main(["shapes", "--outdir", out, "--n", str(SHARD_SAMPLES), "--resolution", str(resolution),
                           "--overwrite", "--workers", "1", "--no-progress", "--clip-model", CLIP_MODEL,
                           "--clip-pretrained", weights["clip"], "--perceptual", PERCEPTUAL,
                           "--perceptual-weights", weights["vgg"], "--perceptual-size", str(perceptual_size)])
        if code != 0:
            raise RuntimeError(f"building the benchmark shards failed (exit {code})")
        open(os.path.join(out, ".complete"), "w").close()
    return out


def _cfg(opts: dict, variant: str):
    from textgan.config import load_config

    recipe, overrides = VARIANTS[variant]
    size = 112 if variant.endswith("p112") else 224  # the shards whose VGG features the variant can read
    # The heterologous terms pair the two halves of a micro-batch, and InfoNCE needs 2 rows in each half.
    heterologous = ["contrastive.h=0.5"] if variant != "base" and opts["batch_gpu"] >= 4 else []
    return load_config(os.path.join(ROOT, "configs", "research", recipe), [
        f"data.shards={opts['shards'][size]}", "data.num_workers=0", "metrics.metrics=[]",
        f"schedule.batch_gpu={opts['batch_gpu']}", f"schedule.batch_size={opts['batch_gpu']}",
        f"text_encoder.pretrained={opts['clip']}", f"contrastive.perceptual_weights={opts['vgg']}",
        *opts["overrides"], *overrides, *heterologous])


def timing_job(rank, world_size, opts: dict) -> dict:
    """Every variant's engines in this one process (one text tower shared): a warm-up iteration with the main
    phases, one round of an iteration with every phase, then `repeats` rounds of one with the main phases, each
    round over every variant, the order rotated."""
    import itertools

    from textgan.data.loading.loader import train_loader
    from textgan.data.manifest import load_manifest
    from textgan.runtime import Runtime
    from textgan.train.setup import build_training
    from textgan.train.step import TrainState
    from textgan.train.text import TextConditioner

    runtime = Runtime.from_env(device="cpu")
    runtime.init_distributed()
    manifests = {size: load_manifest(path) for size, path in opts["shards"].items()}
    text = TextConditioner(_cfg(opts, "base").text_encoder, manifests[224], runtime.device)
    loader = train_loader(opts["shards"][224], opts["batch_gpu"], rank=0, world_size=1, seed=0, num_workers=0)
    batches = itertools.cycle(list(itertools.islice(iter(loader), SHARD_SAMPLES // opts["batch_gpu"])))
    names = list(VARIANTS)
    runs = {}
    for v in names:
        cfg = _cfg(opts, v)
        manifest = manifests[cfg.contrastive.perceptual_size if v != "base" else 224]
        runs[v] = (build_training(cfg, runtime, text=text, manifest=manifest, objective_cls=phase_clock_objective()),
                   TrainState())
    # the variants read the same batches: the 112 px shards hold the same images, only their VGG features differ
    p112 = {v for v in names if v.endswith("p112")}
    batches_p112 = itertools.cycle(list(itertools.islice(
        iter(train_loader(opts["shards"][112], opts["batch_gpu"], rank=0, world_size=1, seed=0, num_workers=0)),
        SHARD_SAMPLES // opts["batch_gpu"])))
    source = {v: batches_p112 if v in p112 else batches for v in names}
    for v, (setup, state) in runs.items():
        phase_seconds(setup, state, source[v], MAIN_PHASES)
    seconds = {v: {"full": [], "main": []} for v in names}
    for v in names:
        seconds[v]["full"].append(phase_seconds(*runs[v], source[v]))
    for rep in range(opts["repeats"]):
        shift = (rep + 1) % len(names)
        for v in names[shift:] + names[:shift]:
            seconds[v]["main"].append(phase_seconds(*runs[v], source[v], MAIN_PHASES))
    schedule = runs["base"][0].cfg.schedule
    terms = sorted(runs["modified1"][0].objective.contrastive.weights)
    return {"seconds": seconds, "G_reg_interval": schedule.G_reg_interval, "D_reg_interval": schedule.D_reg_interval,
            "terms": terms}


def run(quick: bool = False):
    size = SIZES["quick" if quick else "full"]
    start = time.perf_counter()
    weights = _weights()
    opts = dict(size, clip=weights["clip"], vgg=weights["vgg"],
                shards={p: _shards(size["resolution"], weights, p) for p in (224, 112)})
    timing = spawn_ranks(timing_job, 1, args=(opts,), threads=THREADS, timeout=3600)[0]
    names = list(VARIANTS)
    full = {v: median_phases(timing["seconds"][v]["full"]) for v in names}
    main = {v: median_phases(timing["seconds"][v]["main"]) for v in names}
    cycle = {v: cycle_seconds(full[v], main[v], timing["G_reg_interval"], timing["D_reg_interval"]) for v in names}
    nets = "size 0.125 at 64 px (quick)" if quick else "configs/coco256.yaml's networks (size 1.0, 256 px)"
    setting = f"s/iteration over a lazy-regularization cycle, {nets}, batch_gpu {size['batch_gpu']}"
    results = [
        Result("contrastive256/modified1", f"{setting}: modified 1's terms (D, CLIP ViT-B/32, VGG-16 at 224 px; it, "
               "ii and heterologous) with the real images' features computed on the fly, over the base recipe; "
               "goal <= 1.15 (the research: 1.29)", "base", "modified 1", cycle["base"], cycle["modified1"],
               "s/iter"),
        Result("contrastive256/precomputed", f"{setting}: the same with the real images' CLIP and VGG features read "
               "from the shards, over the base recipe", "base", "modified 1, precomputed", cycle["base"],
               cycle["precomputed"], "s/iter"),
        Result("contrastive256/p112", f"{setting}: modified 1 with VGG-16 at 112 px (contrastive.perceptual_size=112), "
               "the real images' features computed on the fly, over the base recipe", "base",
               "modified 1, VGG 112 px", cycle["base"], cycle["p112"], "s/iter"),
        Result("contrastive256/precomputed_p112", f"{setting}: precomputed with VGG-16 at 112 px "
               "(contrastive.perceptual_size=112, shards built with --perceptual-size 112), over the base recipe",
               "base", "modified 1, precomputed, VGG 112 px", cycle["base"], cycle["precomputed_p112"], "s/iter"),
    ]
    phases = "; ".join(f"{p} " + " / ".join(f"{full[v][p]:.2f}" for v in names) + " s" for p in PHASES)
    main_phases = "; ".join(f"{p} " + " / ".join(f"{main[v][p]:.2f}" for v in names) + " s" for p in MAIN_PHASES)
    results[0].notes.append(
        f"contrastive256: one process ({THREADS} torch thread), the variants ({' / '.join(names)}) built alike from "
        f"the same seed, one text tower shared, the same {SHARD_SAMPLES // size['batch_gpu']} real micro-batches "
        f"cycled (no data-loading cost; caption embeddings read from the shards in every variant). Terms on in "
        f"modified 1: {', '.join(timing['terms'])}, plus D's real-pair term in D's phase. Seconds per phase, in the "
        f"iteration with every phase: {phases}; with the main phases only (medians): {main_phases}. One warm-up "
        f"iteration per variant (main phases), one round of an iteration with every phase, then {size['repeats']} "
        f"round(s) of one with the main phases, the order rotated; "
        f"{time.perf_counter() - start:.0f} s. The contrastive towers run in G's main phase only (the CLIP and "
        f"VGG forwards and backwards through the generated images, and without gradient through the real ones "
        f"unless precomputed; D's features of the real images for its image-image term).")
    return results


if __name__ == "__main__":
    for res in run(quick=os.environ.get("QUICK") == "1"):
        print(res)
