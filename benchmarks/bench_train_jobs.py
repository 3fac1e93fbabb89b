"""The training benchmark's rank workers (run by bench_train_ranks.spawn_ranks) and what they measure.

zero_job  (world 2): one set of demo networks per ZeRO stage, all in the same processes, timed in
          interleaved windows; Adam-state and parameter bytes each rank holds; checkpoint saves of
          the stage-2 set between windows.
stall_job (world 1): the demo loop's step fed by the streaming loader or by the same batches held
          in memory, alternating windows on the same engines.

Each mode keeps its own TrainState, so every mode runs the same sequence of phases (Greg every
G_reg_interval, Dreg every D_reg_interval iterations, counted per mode) whatever the window size.
"""

import dataclasses
import itertools
import os
import time
from dataclasses import dataclass

import torch
from bench_train_ranks import demo_cfg

# The demo's layers (<= 37k elements) are all under ZeRO-3's default stage3_param_persistence_threshold
# (1e5), which would keep every parameter whole on every rank; 0 makes stage 3 partition all of them,
# as it does with the large layers of a real model.
PARTITION_ALL = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}


# Iterations run before each timed data-stall window (see stall_job).
LEAD_IN = 1


@dataclass
class Setup:
    training: object  # textgan.train.setup.TrainingSetup
    state: object  # textgan.train.step.TrainState


def _start():
    from textgan.runtime import Runtime

    runtime = Runtime.from_env(device="cpu")
    runtime.init_distributed()
    return runtime


def _build(cfg, runtime, **options) -> Setup:
    """What training_loop builds (textgan.train.setup.build_training, seeded alike for every setup)
    with a fresh TrainState; options go to build_training."""
    from textgan.train.setup import build_training
    from textgan.train.step import TrainState

    return Setup(build_training(cfg, runtime, **options), TrainState())


def _window(setup: Setup, batches, runtime, iterations: int) -> float:
    """Seconds per iteration over `iterations` train_step calls; ranks start and stop together."""
    from textgan.train.step import train_step

    runtime.barrier()
    start = time.perf_counter()
    for _ in range(iterations):
        train_step(setup.training, batches, setup.state)
    runtime.barrier()
    return (time.perf_counter() - start) / iterations


def _rotated(items: list, shift: int) -> list:
    """items rotated by `shift`: each repeat starts with another mode, so a slow spell of the
    shared machine does not always land on the same one."""
    shift %= len(items)
    return items[shift:] + items[:shift]


# ---------------------------------------------------------------------- memory each rank holds


def _inner_optimizer(engine) -> torch.optim.Optimizer:
    """The torch optimizer that really steps: the client Adam itself on stage 0, the one inside
    DeepSpeed's ZeRO wrapper (engine.optimizer.optimizer) on stages 1-3, whose parameters are then
    this rank's flat fp32 partitions."""
    opt = engine.optimizer
    while not isinstance(opt, torch.optim.Optimizer):
        opt = opt.optimizer
    return opt


def _bytes(tensors) -> int:
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in tensors if t.numel()}
    return sum(unique.values())


def adam_state_bytes(engine) -> int:
    """Bytes of exp_avg + exp_avg_sq that this rank's optimizer holds (read from its state)."""
    state = _inner_optimizer(engine).state
    return _bytes(s[k] for s in state.values() for k in ("exp_avg", "exp_avg_sq") if k in s)


def master_bytes(engine) -> int:
    """Bytes of the fp32 copies the ZeRO wrapper keeps as the optimizer's parameters (this rank's
    partition); 0 on stage 0, where Adam updates the module's own parameters."""
    module_ptrs = {p.data_ptr() for p in engine.module.parameters() if p.numel()}
    params = [p for g in _inner_optimizer(engine).param_groups for p in g["params"]]
    return _bytes(p for p in params if p.data_ptr() not in module_ptrs)


def param_bytes(module) -> int:
    """Bytes of the module's parameters on this rank: the full tensors, or on ZeRO-3 the rank's
    partition (p.ds_tensor; p.data is empty between forwards)."""
    tensors = [p.data for p in module.parameters()]
    tensors += [p.ds_tensor for p in module.parameters() if getattr(p, "ds_tensor", None) is not None]
    return _bytes(tensors)


def _memory(engines) -> dict:
    return {
        "adam": adam_state_bytes(engines.G) + adam_state_bytes(engines.D),
        "params": param_bytes(engines.G.module) + param_bytes(engines.D.module),
        "master": master_bytes(engines.G) + master_bytes(engines.D),
        "numel": sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel()
                     for m in (engines.G.module, engines.D.module) for p in m.parameters()),
    }


# ---------------------------------------------------------------------- world 2: ZeRO stages


def _held_batches(cfg, runtime, text, count: int):
    """`count` real micro-batches of this rank with their text embeddings as "c", and the loader."""
    from textgan.data.loading.loader import train_loader

    loader = train_loader(cfg.data.shards, cfg.schedule.batch_gpu, rank=runtime.rank,
                          world_size=runtime.world_size, seed=cfg.seed, num_workers=0)
    batches = list(itertools.islice(iter(loader), count))
    for batch in batches:
        batch["c"] = text(batch)
    return batches, loader


def zero_job(rank, world_size, opts: dict) -> dict:
    """opts: shards, overrides, stages, warmup, window, repeats, ckpt_dir, ckpt_stage."""
    from textgan.data.manifest import load_manifest
    from textgan.train.checkpoint import save_checkpoint
    from textgan.train.rundir import config_hash
    from textgan.train.text import TextConditioner

    runtime = _start()
    base = demo_cfg(opts["shards"], *opts["overrides"])
    text = TextConditioner(base.text_encoder, load_manifest(base.data.shards), runtime.device)
    setups = {}
    for stage in opts["stages"]:
        cfg = demo_cfg(opts["shards"], *opts["overrides"], f"dist.zero_stage_G={stage}", f"dist.zero_stage_D={stage}")
        # c_dim: no text tower per setup; the held batches carry their embeddings as "c"
        setups[stage] = _build(cfg, runtime, c_dim=text.dim, ds_overrides=PARTITION_ALL if stage == 3 else None)
    accum = setups[opts["stages"][0]].training.engines.accum
    held, loader = _held_batches(base, runtime, text, accum)
    batches = itertools.cycle(held)

    for setup in setups.values():  # first iterations: allocations, ZeRO-3's parameter trace
        _window(setup, batches, runtime, opts["warmup"])
    memory = {stage: _memory(setup.training.engines) for stage, setup in setups.items()}

    seconds = {stage: [] for stage in setups}
    ckpt_seconds, ckpt_bytes = [], 0
    ckpt = setups[opts["ckpt_stage"]]
    for rep in range(opts["repeats"]):
        for stage in _rotated(list(setups), rep):
            seconds[stage].append(_window(setups[stage], batches, runtime, opts["window"]))
        runtime.barrier()
        start = time.perf_counter()
        path = save_checkpoint(opts["ckpt_dir"], f"{rep:06d}", ckpt.training.engines,
                               {"state": ckpt.state.state_dict(), "config_hash": config_hash(ckpt.training.cfg)},
                               keep=1, rank_state={"loader": loader.state_dict()})
        ckpt_seconds.append(time.perf_counter() - start)  # save_checkpoint ends with a barrier
        if runtime.is_main:
            ckpt_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    return {"rank": rank, "seconds": seconds, "memory": memory, "ckpt_seconds": ckpt_seconds,
            "ckpt_bytes": ckpt_bytes, "batch_size": base.schedule.batch_size, "accum": accum,
            "kimg_per_tick": base.schedule.kimg_per_tick}


# ---------------------------------------------------------------------- world 1: data stall


class TimedEncoder:
    """The text conditioner, with the time spent in it added up (it encodes every batch's captions)."""

    def __init__(self, text):
        self.text, self.seconds = text, 0.0

    def __call__(self, batch):
        start = time.perf_counter()
        try:
            return self.text(batch)
        finally:
            self.seconds += time.perf_counter() - start


def stall_job(rank, world_size, opts: dict) -> dict:
    """opts: shards, overrides, num_workers, warmup, window, repeats."""
    from textgan.data.loading.loader import train_loader
    from textgan.train.step import TrainState

    runtime = _start()
    cfg = demo_cfg(opts["shards"], *opts["overrides"])
    built = _build(cfg, runtime).training
    loader = train_loader(cfg.data.shards, cfg.schedule.batch_gpu, rank=runtime.rank, world_size=runtime.world_size,
                          seed=cfg.seed, num_workers=opts["num_workers"])
    streamed = iter(loader)
    held = itertools.cycle([next(streamed) for _ in range(built.engines.accum)])
    sources = {"memory": held, "stream": streamed}
    encoders = {mode: TimedEncoder(built.text) for mode in sources}
    # One set of engines; each mode conditions through its own timed encoder and keeps its own state.
    setups = {mode: Setup(dataclasses.replace(built, c_encoder=encoders[mode]), TrainState()) for mode in sources}

    def window(mode, iterations):
        # Untimed lead-in: while the other mode ran, the idle worker filled its prefetch queue (the
        # DataLoader's 2 batches = one iteration's accumulation); those batches cost no waiting.
        _window(setups[mode], sources[mode], runtime, LEAD_IN)
        return _window(setups[mode], sources[mode], runtime, iterations)

    for mode in sources:
        window(mode, opts["warmup"])
    for encoder in encoders.values():
        encoder.seconds = 0.0  # from here on: lead-ins and timed windows, LEAD_IN + window per round
    seconds = {mode: [] for mode in sources}
    for rep in range(opts["repeats"]):
        for mode in _rotated(list(sources), rep):
            seconds[mode].append(window(mode, opts["window"]))
    measured = opts["repeats"] * (opts["window"] + LEAD_IN)
    return {"seconds": seconds, "encode_seconds": {m: e.seconds / measured for m, e in encoders.items()},
            "skipped": loader.skipped,
            "batch_size": cfg.schedule.batch_size, "batch_gpu": cfg.schedule.batch_gpu, "accum": built.engines.accum,
            "threads": torch.get_num_threads()}
