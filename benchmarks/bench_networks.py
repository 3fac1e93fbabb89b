"""Networks: the G+D training step on today's paths against the earlier ones, side by side in one process.

The COCO recipes' networks and phases (configs/coco64.yaml: size 0.5 at 64 px; configs/coco256.yaml: size 1.0 at
256 px; StyleGAN2, ADA at p = 0 as a run starts, path length every 4 iterations, lazy R1 every 16), CPU, fp32,
world 1, batch_gpu small enough for this CPU (SIZES); c a random 512-d vector per sample (the width of the recipes'
CLIP ViT-B/32: the text tower is not part of the step). Variants, built alike from the same seed:
  earlier  the earlier paths: textgan.nets.layers.set_unfused_reference on G and D, loss.pl_batch_shrink=1,
           model.channels_last=false
  paths    today's network paths (D's skip filtered down first, noise added in the pass that demodulates),
           loss.pl_batch_shrink=1, model.channels_last=false (64 px only: at 256 px it does not fit the time)
  nchw     today's defaults but model.channels_last=false (64 px only)
  today    today's defaults (loss.pl_batch_shrink=2, model.channels_last=true)
- networks/step{R}: seconds per iteration averaged over one cycle of the lazy regularizers (16 iterations: one
  with all four phases, three with Gmain, Greg and Dmain, twelve with Gmain and Dmain), earlier over today.
  Each window times two real train_step calls per variant, one with all four phases due and one with the main
  phases only, each phase on its own clock; the cycle is assembled from them (cycle_seconds).
- networks/paths64: earlier over paths (what the two network paths buy); networks/pl_shrink64: paths over nchw
  (what loss.pl_batch_shrink=2 buys); networks/channels_last64: nchw over today (what the layout buys). Their
  product is step64.
The notes give every phase's seconds: Greg runs G alone (the noise path, and the shrink), Dreg D alone (the skip).
"""

import itertools
import math
import os
import statistics
import time

from bench_train_ranks import ROOT, spawn_ranks
from harness import Result

C_DIM = 512
# batch_gpu 2 is the smallest batch whose path-length phase shrinks (2 // 2 = 1 sample) and whose minibatch
# stddev still has a group of 2; at 256 px more does not fit the benchmark's ~10 minutes on a shared 2-core CPU.
SIZES = {
    64: {"batch_gpu": 4, "repeats": 3, "variants": ("earlier", "paths", "nchw", "today")},
    256: {"batch_gpu": 2, "repeats": 1, "variants": ("earlier", "today")},
}
QUICK = {"resolution": 64, "batch_gpu": 2, "repeats": 1, "variants": ("earlier", "paths", "nchw", "today"),
         "overrides": ["model.size=0.125"]}
# One torch thread: with another job on both cores, two threads spend most of their time waiting for each
# other (a G forward + backward measured 25x slower with 2 threads than with 1), which would time the
# scheduler rather than the networks.
THREADS = 1
PHASES = ("Gmain", "Greg", "Dmain", "Dreg")
MAIN_PHASES = ("Gmain", "Dmain")
VARIANTS = {  # name: (earlier network paths, loss.pl_batch_shrink, model.channels_last)
    "earlier": (True, 1, False),
    "paths": (False, 1, False),
    "nchw": (False, 2, False),
    "today": (False, 2, True),
}


def recipe_cfg(resolution: int, batch_gpu: int, *overrides):
    """configs/coco{resolution}.yaml as one process runs it with batch_gpu samples (no metrics, no loader)."""
    from textgan.config import load_config

    return load_config(os.path.join(ROOT, "configs", f"coco{resolution}.yaml"),
                       [f"schedule.batch_gpu={batch_gpu}", f"schedule.batch_size={batch_gpu}", "metrics.metrics=[]",
                        "data.num_workers=0", *overrides])


def phase_clock_objective():
    """A GANObjective that notes when train_step first asks it for each phase's loss: a phase then runs until
    the next phase asks (the last one until train_step returns, with the iteration's EMA update)."""
    from textgan.losses.objective import GANObjective

    class PhaseClock(GANObjective):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.starts = []

        def phase_loss(self, phase, inputs):
            if not self.starts or self.starts[-1][0] != phase.name:
                self.starts.append((phase.name, time.perf_counter()))
            return super().phase_loss(phase, inputs)

    return PhaseClock


def phase_seconds(setup, state, batches, phases=PHASES) -> dict:
    """{phase: seconds} of one train_step with exactly `phases` due: all four, or the main ones."""
    from textgan.train.step import train_step

    # batch_idx 0 starts a cycle (every regularizer due); 1 is due for none of them
    state.batch_idx = 0 if phases == PHASES else 1
    starts = setup.objective.starts
    starts.clear()
    train_step(setup, batches, state)
    end = time.perf_counter()
    names = tuple(name for name, _ in starts)
    if names != phases:
        raise RuntimeError(f"expected the phases {phases} in one iteration, got {names}")
    times = [t for _, t in starts] + [end]
    return {name: times[i + 1] - times[i] for i, name in enumerate(names)}


def cycle_seconds(full: dict, main: dict, G_reg_interval: int, D_reg_interval: int) -> float:
    """Seconds per iteration averaged over the lcm(G_reg_interval, D_reg_interval) iterations of a cycle, from an
    iteration with all four phases (`full`) and one with the main phases only (`main`). An iteration with one
    regularizer runs the main phases as `full` did when it is Greg (what follows the path-length phase runs
    after it, as there), as `main` did when it is Dreg (which comes last)."""
    length = math.lcm(G_reg_interval, D_reg_interval)
    both = 1
    greg_only = length // G_reg_interval - both
    dreg_only = length // D_reg_interval - both
    neither = length - both - greg_only - dreg_only
    main_only = sum(main[p] for p in MAIN_PHASES)
    total = (both * sum(full.values()) + greg_only * (full["Gmain"] + full["Greg"] + full["Dmain"])
             + dreg_only * (main_only + full["Dreg"]) + neither * main_only)
    return total / length


def synthetic_batches(resolution: int, batch_gpu: int, n: int = 4):
    """n fixed batches (images in [-1, 1], c), cycled: no data-loading cost."""
    import torch

    g = torch.Generator().manual_seed(0)
    return itertools.cycle([{"image": torch.rand(batch_gpu, 3, resolution, resolution, generator=g) * 2 - 1,
                             "c": torch.randn(batch_gpu, C_DIM, generator=g)} for _ in range(n)])


def build_variant(variant: str, opts: dict, runtime):
    """(setup, TrainState) of one variant; every variant is seeded alike, so all start from the same weights."""
    from textgan.nets.layers import set_unfused_reference
    from textgan.train.setup import build_training
    from textgan.train.step import TrainState

    unfused, shrink, channels_last = VARIANTS[variant]
    cfg = recipe_cfg(opts["resolution"], opts["batch_gpu"], *opts["overrides"], f"loss.pl_batch_shrink={shrink}",
                     f"model.channels_last={str(channels_last).lower()}")
    setup = build_training(cfg, runtime, c_dim=C_DIM, objective_cls=phase_clock_objective())
    set_unfused_reference(setup.engines.G.module, unfused)
    set_unfused_reference(setup.engines.D.module, unfused)
    return setup, TrainState()


def timing_job(rank, world_size, opts: dict) -> dict:
    """The variants' engines in this one process: one warm-up iteration with all phases each, then `repeats`
    rounds of one iteration with all phases and one with the main phases per variant, the order rotated."""
    from textgan.runtime import Runtime

    runtime = Runtime.from_env(device="cpu")
    runtime.init_distributed()
    batches = synthetic_batches(opts["resolution"], opts["batch_gpu"])
    names = list(opts["variants"])
    runs = {v: build_variant(v, opts, runtime) for v in names}
    for setup, state in runs.values():
        phase_seconds(setup, state, batches)
    seconds = {v: {"full": [], "main": []} for v in names}
    for rep in range(opts["repeats"]):
        shift = rep % len(names)
        for variant in names[shift:] + names[:shift]:
            seconds[variant]["full"].append(phase_seconds(*runs[variant], batches))
            seconds[variant]["main"].append(phase_seconds(*runs[variant], batches, MAIN_PHASES))
    schedule = runs[names[0]][0].cfg.schedule
    return {"seconds": seconds, "G_reg_interval": schedule.G_reg_interval, "D_reg_interval": schedule.D_reg_interval}


def median_phases(windows: list) -> dict:
    return {p: statistics.median(w[p] for w in windows) for p in windows[0]}


def phase_note(resolution: int, variants: list, full: dict, main: dict) -> str:
    rows = "; ".join(f"{p} " + " / ".join(f"{full[v][p]:.2f}" for v in variants) + " s" for p in PHASES)
    main_rows = "; ".join(f"{p} " + " / ".join(f"{main[v][p]:.2f}" for v in variants) + " s" for p in MAIN_PHASES)
    return (f"networks/step{resolution}, seconds per phase ({' / '.join(variants)}): in the iteration with all four "
            f"phases {rows}; in the one with the main phases only {main_rows}.")


def step_results(resolution: int, opts: dict, timing: dict, took: float) -> list:
    variants = list(opts["variants"])
    full = {v: median_phases(timing["seconds"][v]["full"]) for v in variants}
    main = {v: median_phases(timing["seconds"][v]["main"]) for v in variants}
    cycle = {v: cycle_seconds(full[v], main[v], timing["G_reg_interval"], timing["D_reg_interval"]) for v in variants}
    nets = "size 0.125 (quick)" if opts["overrides"] else f"configs/coco{resolution}.yaml's networks"
    setting = f"{resolution} px, {nets}, batch_gpu {opts['batch_gpu']}"
    per_iteration = "s/iteration over a lazy-regularization cycle"
    results = [Result(f"networks/step{resolution}", f"{per_iteration}, {setting}: the earlier paths over today's "
                      "(above 1: today is faster)", "today", "earlier", cycle["today"], cycle["earlier"], "s/iter")]
    if "paths" in cycle:
        results += [
            Result(f"networks/paths{resolution}", f"{per_iteration}, {setting}: the earlier network paths over "
                   "today's (D's skip, noise with demodulation), both with pl_batch_shrink 1", "paths", "earlier",
                   cycle["paths"], cycle["earlier"], "s/iter"),
            Result(f"networks/pl_shrink{resolution}", f"{per_iteration}, {setting}: loss.pl_batch_shrink 1 over 2, "
                   "both on today's network paths in the NCHW layout", "shrink 2", "shrink 1", cycle["nchw"],
                   cycle["paths"], "s/iter"),
            Result(f"networks/channels_last{resolution}", f"{per_iteration}, {setting}: model.channels_last false "
                   "over true, both otherwise today's defaults", "channels_last", "NCHW", cycle["today"],
                   cycle["nchw"], "s/iter"),
        ]
    results[0].notes.append(
        f"{phase_note(resolution, variants, full, main)} One warm-up iteration per variant, then {opts['repeats']} "
        f"round(s) of the two iterations per variant in rotated order, medians; {took:.0f} s.")
    return results


def run(quick: bool = False):
    results = []
    plans = [dict(QUICK)] if quick else [{"resolution": r, "overrides": [], **s} for r, s in SIZES.items()]
    for opts in plans:
        start = time.perf_counter()
        timing = spawn_ranks(timing_job, 1, args=(opts,), threads=THREADS, timeout=3600)[0]
        results += step_results(opts["resolution"], opts, timing, time.perf_counter() - start)
    results[0].notes.append(
        "networks: one process per resolution (1 torch thread, see THREADS), the variants' engines built alike "
        "from the same seed and timed in turn, the same 4 synthetic batches cycled. Variants: earlier = "
        "set_unfused_reference on G and D with loss.pl_batch_shrink=1 and model.channels_last=false; paths = "
        "today's network paths with pl_batch_shrink=1, NCHW; nchw = the defaults but model.channels_last=false; "
        "today = the defaults (pl_batch_shrink 2, channels_last). The cycle of 16 iterations is assembled "
        "from the two timed ones (benchmarks/bench_networks.py cycle_seconds); the EMA update is in the last phase "
        "of each. On this shared 2-core machine absolute seconds are noisy (one iteration of a phase varied by up "
        "to 30% between identical code paths at 256 px, e.g. Gmain of the same variant in its two iterations), the "
        "side-by-side ratios less so.")
    return results
