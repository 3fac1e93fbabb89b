"""The training loop: build everything once, then iterate, summarising once per tick.

Progress is counted in images (cur_nimg), reported once per tick (kimg_per_tick), with sample
grids every image_snapshot_ticks, full checkpoints every network_snapshot_ticks and metrics every
metrics.metrics_ticks (textgan.train.periodic_metrics), StyleGAN-style.
Every rank runs this function; only rank 0 writes stats, grids and logs. Checkpoints are
collective (each rank saves its own RNG and loader position).
"""

import contextlib
import os
import time

import torch

from textgan.augment.ada import AugmentPipe
from textgan.data.loading.loader import eval_loader, train_loader
from textgan.train.checkpoint import checkpoint_tag, find_latest, load_checkpoint, save_checkpoint
from textgan.train.grids import fixed_grid_inputs, save_grid
from textgan.train.heartbeat import Heartbeat, job_identity
from textgan.train.periodic_metrics import PeriodicMetrics
from textgan.train.rundir import config_hash, write_run_info
from textgan.train.schedules import apply_lr, lr_multiplier
from textgan.train.setup import build_training
from textgan.train.stats import StatsCollector, StatsWriter
from textgan.train.step import TrainState, train_step
from textgan.train.text import TextConditioner
from textgan.train.tick_line import kimg_decimals, tick_line, timing_entries
from textgan.train.val_real import ValRealLoss
from textgan.warn_once import warning_mark, warnings_since

GRID_SIZE = 16


@torch.no_grad()
def generate(G_ema, text: TextConditioner, captions, z) -> torch.Tensor:
    """G_ema images for captions with fixed latents, in [-1, 1] (clamped), on the CPU."""
    out = G_ema(z.to(text.device), text.encode(captions), noise_mode="const")
    return out.clamp(-1, 1).float().cpu()


def threads_per_rank(cfg, runtime) -> int:
    """cfg.dist.num_threads, or this node's cores shared among its ranks."""
    if cfg.dist.num_threads:
        return cfg.dist.num_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // runtime.local_world_size)


def training_loop(cfg, runtime, run_dir: str, resume=None, init_from=None, argv=(), stop_requested=None,
                  identity=None) -> dict:
    """stop_requested: a collective () -> bool asked at every step boundary (textgan.train.preempt); when it
    says True, every rank saves a checkpoint (with the partial tick) and the result has "stopped": True.
    identity: the job and attempt (textgan.train.heartbeat.job_identity) the heartbeat names.

    Every way out (the end, a stop, an error) closes what the run opened: the data loader's workers
    ignore SIGTERM, so workers left running after an error would keep the process from exiting."""
    with contextlib.ExitStack() as opened:
        return _train(cfg, runtime, run_dir, resume, init_from, argv, stop_requested, opened, identity)


def _train(cfg, runtime, run_dir, resume, init_from, argv, stop_requested, opened: contextlib.ExitStack,
           identity=None) -> dict:
    log = print if runtime.is_main else (lambda *a, **k: None)
    heartbeat = Heartbeat(run_dir, identity or job_identity(), enabled=runtime.is_main)
    heartbeat.beat(0.0, 0, "starting", force=True)
    attempt_start, elapsed_before = time.time(), 0.0  # elapsed_before: earlier attempts' time (checkpoint)
    warnings_from = warning_mark()  # run.json records the warnings given while this run is built
    torch.set_num_threads(threads_per_rank(cfg, runtime))
    setup = build_training(cfg, runtime, init_from=init_from)  # seeds with cfg.seed first
    engines, text, augment = setup.engines, setup.text, setup.augment
    metrics = PeriodicMetrics(cfg, runtime, run_dir, log)
    metrics.prepare()  # leakage and missing weights stop the run here, before any training
    loader = train_loader(cfg.data.shards, cfg.schedule.batch_gpu, rank=runtime.rank, world_size=runtime.world_size,
                          seed=cfg.seed, num_workers=cfg.data.num_workers, max_skip_rate=cfg.data.max_skip_rate)
    opened.callback(loader.close)
    val_real = ValRealLoss.from_config(cfg, setup)  # data.val_shards: its fixed sets, read once (or nothing)
    state = TrainState()
    ckpt_root = os.path.join(run_dir, "checkpoints")
    resume_path = find_latest(ckpt_root) if resume == "auto" else resume
    partial_tick = None
    if resume_path:
        client = load_checkpoint(resume_path, engines)
        if client.get("config_hash") != config_hash(cfg, ignore=_RESUME_FREE_KEYS):
            log("warning: resuming with a config that differs from the checkpoint's (see config.yaml)")
        state.load_state_dict(client["state"])
        elapsed_before = float(client.get("elapsed_sec", 0.0))  # 0: a checkpoint from before it was saved
        if augment is not None and "augment" in client:
            augment.load_state_dict(client["augment"])
        loader.load_state_dict(client["rank_state"]["loader"])
        partial_tick = client["rank_state"].get("partial_tick")  # saved by a stop mid-tick
        log(f"resumed from {resume_path} at kimg {state.cur_nimg / 1000:.1f}, tick {state.tick}")
    elif runtime.is_main:
        write_run_info(run_dir, cfg, list(argv), warnings=warnings_since(warnings_from))
    writer = StatsWriter(run_dir, enabled=runtime.is_main,
                         resume_kimg=state.cur_nimg / 1000 if resume_path else None)
    collector = StatsCollector(runtime.device)
    first = next(iter(eval_loader(cfg.data.shards, GRID_SIZE, num_workers=0)), None)
    if first is None:  # every shard was skipped (the loader said why, above); a bare StopIteration says nothing
        raise FileNotFoundError(f"no readable sample in data.shards={cfg.data.shards}: every shard is missing or "
                                "damaged (see the loader's lines above); restore or rebuild the shards, then resume")
    grid_captions = first["caption"]
    grid_z, grid_captions = fixed_grid_inputs(grid_captions, cfg.model.z_dim, GRID_SIZE, cfg.seed)

    def elapsed_sec() -> float:
        """The run's wall time so far, over all attempts (time between attempts, e.g. in a queue, not counted)."""
        return elapsed_before + time.time() - attempt_start

    def client_state() -> dict:
        state_out = {"state": state.state_dict(), "config_hash": config_hash(cfg, ignore=_RESUME_FREE_KEYS),
                     "elapsed_sec": elapsed_sec()}
        if augment is not None:
            state_out["augment"] = augment.state_dict()
        return state_out

    total_nimg = int(cfg.schedule.total_kimg * 1000)
    tick_nimg = int(cfg.schedule.kimg_per_tick * 1000)
    batch_iter = iter(loader)
    tick_start_nimg, tick_start = state.cur_nimg, time.time()
    skipped_before = loader.skipped
    if partial_tick:  # continue the interrupted tick: its statistics so far and where it started
        tick_start_nimg, skipped_before = partial_tick["tick_start_nimg"], partial_tick["skipped_before"]
        tick_start -= partial_tick["seconds"]
        collector.load_state_dict(partial_tick["stats"])
    stopped = False
    heartbeat.beat(state.cur_nimg / 1000, state.tick, "training", force=True)
    log(f"training {cfg.model.arch} at {cfg.data.resolution} px on {runtime.world_size} rank(s) "
        f"({runtime.device.type}); run dir {run_dir}")
    while state.cur_nimg < total_nimg:
        if stop_requested is not None and stop_requested():  # preemption / time limit: save, leave
            heartbeat.beat(state.cur_nimg / 1000, state.tick, "saving", force=True)
            partial = {"tick_start_nimg": tick_start_nimg, "skipped_before": skipped_before,
                       "seconds": time.time() - tick_start, "stats": collector.state_dict()}
            path = save_checkpoint(ckpt_root, checkpoint_tag(state.cur_nimg), engines, client_state(),
                                   cfg.schedule.keep_checkpoints,
                                   rank_state={"loader": loader.state_dict(), "partial_tick": partial})
            log(f"stopped at kimg {state.cur_nimg / 1000:.3f} (tick {state.tick + 1} in progress); saved {path}")
            stopped = path
            heartbeat.beat(state.cur_nimg / 1000, state.tick, "stopped", force=True)
            break
        multiplier = lr_multiplier(cfg.optim.lr_schedule, state.cur_nimg / 1000, cfg.schedule.total_kimg,
                                   cfg.optim.warmup_kimg)
        apply_lr(engines.G_opt, engines.G_base_lr, multiplier)
        apply_lr(engines.D_opt, engines.D_base_lr, multiplier)
        step_stats = train_step(setup, batch_iter, state)
        heartbeat.beat(state.cur_nimg / 1000, state.tick)  # writes only every EVERY_S seconds
        for name, value in step_stats.items():
            collector.report(name, value)
        if isinstance(augment, AugmentPipe) and state.batch_idx % cfg.augment.ada_interval == 0:
            adjust_ada(augment, step_stats, runtime, cfg)
        done = state.cur_nimg >= total_nimg
        if not done and state.cur_nimg < tick_start_nimg + tick_nimg:
            continue

        state.tick += 1
        val_real.report(collector)  # D as the tick's checkpoint saves it; inside the tick's time (sec/kimg)
        seconds = time.time() - tick_start
        collector.report("Timing/sec_per_tick", seconds)
        collector.report("Timing/sec_per_kimg", seconds / max(state.cur_nimg - tick_start_nimg, 1) * 1000)
        collector.report("Resources/peak_mem_gb", _peak_memory_gb(runtime.device))
        collector.report("Progress/lr_multiplier", multiplier)
        collector.report("Data/skipped", loader.skipped - skipped_before)
        if augment is not None and hasattr(augment, "p"):
            collector.report("Progress/augment_p", float(augment.p.reshape(-1)[0]))
        summary = collector.tick_summary(reduce_fn=lambda t: runtime.all_reduce_mean(t) * runtime.world_size,
                                         all_gather_object_fn=runtime.all_gather_object)
        summary.update(timing_entries(elapsed_sec(), state.cur_nimg, total_nimg, summary))
        writer.append(state.tick, state.cur_nimg / 1000, summary)
        log(tick_line(state.tick, state.cur_nimg, total_nimg, summary, kimg_decimals(cfg.schedule.kimg_per_tick),
                      runtime.world_size))
        if runtime.is_main and (done or state.tick % cfg.schedule.image_snapshot_ticks == 0):
            path = os.path.join(run_dir, f"fakes{checkpoint_tag(state.cur_nimg)}.png")  # one per snapshot, as checkpoints
            grid = save_grid(generate(engines.G_ema, text, grid_captions, grid_z), grid_captions, path, ncol=4)
            writer.add_image_grid("Samples/fakes", grid, state.cur_nimg / 1000)
        snapshot = None
        if done or state.tick % cfg.schedule.network_snapshot_ticks == 0:
            heartbeat.beat(state.cur_nimg / 1000, state.tick, "saving", force=True)
            snapshot = save_checkpoint(ckpt_root, checkpoint_tag(state.cur_nimg), engines, client_state(),
                                       cfg.schedule.keep_checkpoints, rank_state={"loader": loader.state_dict()})
        if metrics.due(state.tick, done):  # every rank; after the checkpoint, so a result names its snapshot
            heartbeat.beat(state.cur_nimg / 1000, state.tick, "metrics", force=True)
            metrics_start = time.time()
            metrics.run(engines, text, state, writer, snapshot, client_state(), {"loader": loader.state_dict()})
            heartbeat.extra["last_metrics_sec"] = time.time() - metrics_start  # the stall rule's bound in a pass
        tick_start_nimg, tick_start, skipped_before = state.cur_nimg, time.time(), loader.skipped
        heartbeat.beat(state.cur_nimg / 1000, state.tick, "training", force=True)

    result = {"run_dir": run_dir, "kimg": state.cur_nimg / 1000, "checkpoints": ckpt_root,
              "tensorboard": run_dir, "samples": os.path.join(run_dir, "fakes*.png")}
    result.update(metrics.summary())  # latest metrics, best checkpoint, shapes_alignment on shapes data
    if stopped:
        result["stopped"], result["stop_checkpoint"] = True, stopped
    else:
        heartbeat.beat(state.cur_nimg / 1000, state.tick, "finished", force=True)
    writer.close()
    return result


# Keys that may change between attempts of one run without making the resume wrong.
_RESUME_FREE_KEYS = ("schedule.total_kimg", "schedule.image_snapshot_ticks", "schedule.network_snapshot_ticks",
                     "schedule.keep_checkpoints", "data.num_workers", "metrics",
                     "data.val_shards", "data.val_images")  # they measure D, never change training


def adjust_ada(augment: AugmentPipe, step_stats: dict, runtime, cfg) -> None:
    """ADA's overfitting heuristic r_t = E[sign(D(real))], averaged over all ranks, moves p.
    Every rank calls this at the same iterations (collective); a skipped Dmain reports nothing,
    and then every rank skipped it (skips are agreed across ranks)."""
    if "Stats/D/real_sign" not in step_stats:
        return
    local = torch.as_tensor(step_stats["Stats/D/real_sign"], dtype=torch.float64).reshape(1).to(runtime.device)
    augment.adjust(float(runtime.all_reduce_mean(local).item()), cfg.schedule.batch_size * cfg.augment.ada_interval)


def _peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

