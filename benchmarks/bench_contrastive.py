"""Contrastive losses: what they cost next to the base model, side by side in one process.

All on the demo's networks and batch (configs/demo.yaml: cGAN, 32 px, batch 32 = 2 x 16), CPU, fp32,
world 1, the demo CLIP tower (from a weights file, so that the shards' precomputed features match)
and a ResNet-18 for the perceptual structure (random weights saved to a file: the cost is the same).
- contrastive/full: seconds per iteration with every term on (D, CLIP and ResNet structures; it, it',
  ii, ii') over the base model; real-image features computed on the fly.
- contrastive/D_and_clip: the same without the ResNet structure; contrastive/demo: the demo recipe's
  terms (D + CLIP, it and ii only).
- contrastive/asymmetric: D + CLIP asymmetric over symmetric.
- contrastive/precomputed_*: the shards' precomputed real-image features over computing them.
- contrastive/peak_memory: peak resident memory growth during training steps, full over base (each
  in a fresh process, since a process's peak never goes down).
"""

import itertools
import os
import statistics
import time

from bench_train_ranks import demo_cfg, interleaved_step_seconds, spawn_ranks, step_seconds
from common import CACHE
from harness import Result

SHARDS_N = 1000
TERMS = ["contrastive.C_it=1", "contrastive.C_ii=1", "contrastive.h=0.5", "contrastive.S_perceptual=1",
         "contrastive.perceptual=resnet18"]
D_AND_CLIP = TERMS + ["contrastive.S_perceptual=0"]
VARIANTS = {
    "base": ["contrastive.C_it=0", "contrastive.C_ii=0"],  # the demo recipe has contrastive terms on
    "demo": ["contrastive.precomputed=never"],  # the demo recipe's own terms: D and CLIP, it and ii
    "D_and_clip": D_AND_CLIP + ["contrastive.precomputed=never"],
    "D_and_clip_asymmetric": D_AND_CLIP + ["contrastive.symmetric=false", "contrastive.precomputed=never"],
    "D_and_clip_precomputed": D_AND_CLIP + ["contrastive.precomputed=require"],
    "full": TERMS + ["contrastive.precomputed=never"],
    "full_precomputed": TERMS + ["contrastive.precomputed=require"],
    # The same comparison on the demo's StyleGAN2 networks (larger G and D, same towers and heads)
    "stylegan2_base": ["model.arch=stylegan2", "contrastive.C_it=0", "contrastive.C_ii=0"],
    "stylegan2_D_and_clip": ["model.arch=stylegan2"] + D_AND_CLIP + ["contrastive.precomputed=never"],
}


def _weights() -> dict:
    """Seeded weights files for the demo CLIP tower and a ResNet-18, made once in the cache."""
    import open_clip
    import torch
    import torchvision

    import textgan.encoders  # noqa: F401  (registers textgan-demo-clip)

    paths = {"clip": os.path.join(CACHE, "demo-clip-seed0.pt"), "resnet": os.path.join(CACHE, "resnet18-seed0.pt")}
    if not all(os.path.exists(p) for p in paths.values()):
        os.makedirs(CACHE, exist_ok=True)
        torch.manual_seed(0)
        torch.save(open_clip.create_model("textgan-demo-clip", pretrained=None).state_dict(), paths["clip"])
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), paths["resnet"])
    return paths


def _shards(weights: dict) -> str:
    """32 px shapes with precomputed CLIP and ResNet features, built once in the cache."""
    from textgan.data.building.cli import main as build_main

    out = os.path.join(CACHE, f"shapes-{SHARDS_N}-32-features")
    if not os.path.exists(os.path.join(out, ".complete")):
        code = build_main(["shapes", "--outdir", out, "--n", str(SHARDS_N), "--resolution", "32", "--overwrite",
                           "--samples-per-shard", "250", "--workers", "1", "--clip-model", "textgan-demo-clip",
                           "--clip-pretrained", weights["clip"], "--perceptual", "resnet18",
                           "--perceptual-weights", weights["resnet"]])
        if code != 0:
            raise RuntimeError(f"building the benchmark shards failed (exit {code})")
        open(os.path.join(out, ".complete"), "w").close()
    return out


def _cfg(opts, variant):
    return demo_cfg(opts["shards"], "text_encoder.random_weights=false", f"text_encoder.pretrained={opts['clip']}",
                    f"contrastive.perceptual_weights={opts['resnet']}", *VARIANTS[variant])


def _setup(opts, variant, runtime, text, manifest):
    """(setup, state) as training_loop builds them for the variant (every variant shares the one text tower)."""
    from textgan.train.setup import build_training
    from textgan.train.step import TrainState

    return build_training(_cfg(opts, variant), runtime, text=text, manifest=manifest), TrainState()


def _context(opts):
    from textgan.data.loading.loader import train_loader
    from textgan.data.manifest import load_manifest
    from textgan.runtime import Runtime
    from textgan.train.text import TextConditioner

    runtime = Runtime.from_env(device="cpu")
    runtime.init_distributed()
    base = _cfg(opts, "base")
    manifest = load_manifest(opts["shards"])
    text = TextConditioner(base.text_encoder, manifest, runtime.device)
    loader = train_loader(opts["shards"], base.schedule.batch_gpu, rank=0, world_size=1, seed=0, num_workers=0)
    batches = itertools.cycle(list(itertools.islice(iter(loader), 8)))  # held in memory: no data cost
    return runtime, manifest, text, batches


def timing_job(rank, world_size, opts: dict) -> dict:
    """Every variant's engines in this one process, timed in interleaved windows (order rotated)."""
    runtime, manifest, text, batches = _context(opts)
    setups = {v: _setup(opts, v, runtime, text, manifest) for v in VARIANTS}
    # the ResNet and StyleGAN2 variants take 7-30x longer per iteration: fewer iterations
    seconds = interleaved_step_seconds(
        setups, batches, opts["warmup"], opts["repeats"],
        lambda v: opts["window_heavy"] if v.startswith(("full", "stylegan2")) else opts["window"])
    return {"seconds": seconds, "batch_size": setups["base"][0].cfg.schedule.batch_size}


def memory_job(rank, world_size, opts: dict, variant: str) -> dict:
    """Peak resident memory growth over training steps of one variant, in a fresh process: RSS
    sampled every 2 ms while the steps run, over RSS just before the first step (so Adam's state,
    activations and the towers' activations count; the set-up's own transient peak does not)."""
    import threading

    import psutil

    runtime, manifest, text, batches = _context(opts)
    s = _setup(opts, variant, runtime, text, manifest)
    process = psutil.Process()
    before = process.memory_info().rss
    peak, stop = [before], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        step_seconds(*s, batches, opts["memory_steps"])
    finally:
        stop.set()
        sampler.join()
    return {"growth": peak[0] - before}


def run(quick: bool = False):
    weights = _weights()
    opts = {"shards": _shards(weights), "clip": weights["clip"], "resnet": weights["resnet"],
            "warmup": 2, "window": 4 if quick else 24, "window_heavy": 2 if quick else 4,
            "repeats": 1 if quick else 3,
            "memory_steps": 2 if quick else 4}
    timing = spawn_ranks(timing_job, 1, args=(opts,), threads=2)[0]
    sec = {v: statistics.median(x) for v, x in timing["seconds"].items()}
    growth = {v: spawn_ranks(memory_job, 1, args=(opts, v), threads=2)[0]["growth"] / 2**20
              for v in ("base", "D_and_clip", "full")}
    batch = f"demo nets, batch {timing['batch_size']}"
    results = [
        Result("contrastive/full", f"s/iteration, every term on (D, CLIP, ResNet-18; it, it', ii, ii') over the base "
               f"model; {batch}", "base", "full", sec["base"], sec["full"], "s/iter"),
        Result("contrastive/D_and_clip", "s/iteration, D and CLIP structures with all four pair types over the base",
               "base", "D + CLIP", sec["base"], sec["D_and_clip"], "s/iter"),
        Result("contrastive/demo", "s/iteration, the demo recipe's terms (D + CLIP, it and ii, h = 0) over the base",
               "base", "demo terms", sec["base"], sec["demo"], "s/iter"),
        Result("contrastive/stylegan2_D_and_clip", "s/iteration, D + CLIP over the base on the demo's StyleGAN2 "
               "networks instead of its cGAN", "StyleGAN2 base", "StyleGAN2 D + CLIP", sec["stylegan2_base"],
               sec["stylegan2_D_and_clip"], "s/iter"),
        Result("contrastive/asymmetric", "s/iteration, D + CLIP asymmetric over symmetric", "symmetric",
               "asymmetric", sec["D_and_clip"], sec["D_and_clip_asymmetric"], "s/iter"),
        Result("contrastive/precomputed_clip", "s/iteration, D + CLIP with the shards' CLIP features of the real "
               "images over computing them", "on the fly", "precomputed", sec["D_and_clip"],
               sec["D_and_clip_precomputed"], "s/iter"),
        Result("contrastive/precomputed_full", "s/iteration, full with the shards' CLIP and ResNet features of the "
               "real images over computing them", "on the fly", "precomputed", sec["full"],
               sec["full_precomputed"], "s/iter"),
        Result("contrastive/peak_memory", "peak RSS growth during training steps, full over base (fresh processes)",
               "base", "full", growth["base"], growth["full"], "MiB"),
        Result("contrastive/peak_memory_D_and_clip", "peak RSS growth during training steps, D + CLIP over base",
               "base", "D + CLIP", growth["base"], growth["D_and_clip"], "MiB"),
    ]
    results[0].notes.append(
        f"contrastive: one process (2 torch threads), every variant's engines built alike and timed in turn, "
        f"{opts['window']} iterations per window ({opts['window_heavy']} for the ResNet and StyleGAN2 variants) after "
        f"{opts['warmup']} warm-up, {opts['repeats']} round(s) with the order rotated, medians; the same 8 real "
        f"micro-batches cycled (no data-loading cost). The text tower loads the same weights file as the "
        f"shards' features, so every variant (base included) reads the caption embeddings from the shards. 'full': "
        f"C_it = C_ii = 1, h = 0.5, S = 1 : 2 : 1, so ten generator terms and D's real-pair term. The ResNet-18 "
        f"sees 224 px inputs (generated 32 px images are resized, as the shard builder does for the reals), "
        f"which on the demo's tiny nets dominates the cost: the ratio is a worst case; with a real-size "
        f"StyleGAN2 the same towers are a far smaller share of a step.")
    return results


if __name__ == "__main__":
    for res in run(quick=os.environ.get("QUICK") == "1"):
        print(res)
