"""Helpers for tests that train on real DeepSpeed engines with several local ranks (gloo, CPU).

    results = run_ranks(worker, tmp_path, world_size=2, args=(...,))   # [result of rank 0, rank 1]

`worker(rank, world_size, *args)` runs in a fresh spawned process per rank, with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set as torchrun would set them; it must be a module-level
function (spawn imports it by name). Each rank's return value is saved to a file and returned here;
an exception in any rank fails the call with that rank's traceback.

The second half builds the tiny training setup the engine and checkpoint tests share: a config,
tiny StyleGAN2 networks (16 px), the real objective and deterministic synthetic batches.
"""

import os
import sys
import time
import traceback

import torch
import torch.multiprocessing as mp

from textgan.runtime import free_port

# ---------------------------------------------------------------------- running ranks


def _entry(worker, rank, world_size, port, out_dir, args, env):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      DS_ACCELERATOR="cpu", **(env or {}))
    torch.set_num_threads(1)  # 2 ranks on a shared 2-core machine
    try:
        result = worker(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        if torch.distributed.is_initialized():  # leave together (see Runtime.shutdown)
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    except BaseException:
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        sys.exit(1)


def run_ranks(worker, tmp_path, world_size=2, args=(), env=None, timeout=600):
    """Run worker on `world_size` local ranks; returns their results in rank order."""
    out_dir = os.path.join(str(tmp_path), f"ranks-{time.time_ns()}")
    os.makedirs(out_dir)
    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_entry, args=(worker, r, world_size, port, out_dir, args, env))
             for r in range(world_size)]
    for p in procs:
        p.start()
    deadline = time.time() + timeout
    while any(p.is_alive() for p in procs):
        failed = [p for p in procs if p.exitcode not in (None, 0)]
        if failed or time.time() > deadline:  # one rank died: the others would wait forever
            break
        time.sleep(0.2)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()
    errors = []
    for r in range(world_size):
        err = os.path.join(out_dir, f"rank{r}.err")
        if os.path.exists(err):
            errors.append(f"--- rank {r}:\n{open(err).read()}")
    if errors or any(p.exitcode != 0 for p in procs):
        codes = [p.exitcode for p in procs]
        raise RuntimeError(f"ranks failed (exit codes {codes}, timeout {timeout}s)\n" + "\n".join(errors))
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world_size)]


# ---------------------------------------------------------------------- the tiny training setup

C_DIM = 8
RESOLUTION = 16


def tiny_cfg(*overrides):
    """A validated TrainConfig for 16-px tiny nets, intervals 1 (every regularizer every step)."""
    from textgan.config import load_config

    base = [
        "data.shards=unused", f"data.resolution={RESOLUTION}",
        "model.channel_base=256", "model.channel_max=32", "model.z_dim=8", "model.w_dim=16",
        "model.mapping_layers=2", "model.mbstd_group_size=2",
        "schedule.batch_size=4", "schedule.batch_gpu=2",
        "schedule.G_reg_interval=1", "schedule.D_reg_interval=1",
        "schedule.ema_kimg=0.01", "schedule.ema_rampup=null",
        "optim.G_lr=0.002", "optim.D_lr=0.002", "loss.r1_gamma=1.0", "loss.style_mixing_prob=0.5",
    ]
    return load_config(None, base + list(overrides))


def tiny_networks(cfg, generator_cls=None):
    """(G, D) with identical weights on every rank (seeded here)."""
    from textgan.nets import Generator, build_networks

    with torch.random.fork_rng():
        torch.manual_seed(1234)
        G, D = build_networks(
            "stylegan2", cfg.model.z_dim, C_DIM, RESOLUTION, channel_base=cfg.model.channel_base,
            channel_max=cfg.model.channel_max,
            generator_kwargs=dict(w_dim=cfg.model.w_dim, mapping_layers=cfg.model.mapping_layers),
            discriminator_kwargs=dict(mbstd_group_size=cfg.model.mbstd_group_size),
        )
        if generator_cls is not None:  # same weights, another forward (e.g. constant noise)
            G2 = generator_cls(z_dim=cfg.model.z_dim, c_dim=C_DIM, w_dim=cfg.model.w_dim, img_resolution=RESOLUTION,
                               channel_base=cfg.model.channel_base, channel_max=cfg.model.channel_max,
                               mapping_layers=cfg.model.mapping_layers)
            G2.load_state_dict(G.state_dict())
            assert isinstance(G2, Generator)
            G = G2
    return G, D


class SyntheticBatches:
    """Deterministic batches for one rank: sample i of rank r is the same whatever the batch size, so
    a rank sees the same samples under any split into micro-batches. `nan_at`: sample indices whose
    image is NaN. Resumable: state_dict() / load_state_dict() hold the next sample index."""

    def __init__(self, rank, batch_gpu, nan_at=()):
        self.rank, self.batch_gpu, self.next_sample, self.nan_at = rank, batch_gpu, 0, set(nan_at)

    def sample(self, i):
        g = torch.Generator().manual_seed(100_000 * (self.rank + 1) + i)
        image = torch.rand([3, RESOLUTION, RESOLUTION], generator=g) * 2 - 1
        if i in self.nan_at:
            image = torch.full_like(image, float("nan"))
        return image, torch.randn([C_DIM], generator=g)

    def __iter__(self):
        return self

    def __next__(self):
        samples = [self.sample(i) for i in range(self.next_sample, self.next_sample + self.batch_gpu)]
        self.next_sample += self.batch_gpu
        return {"image": torch.stack([s[0] for s in samples]), "c": torch.stack([s[1] for s in samples])}

    def state_dict(self):
        return {"next_sample": self.next_sample}

    def load_state_dict(self, state):
        self.next_sample = int(state["next_sample"])


def setup_training(cfg, generator_cls=None, ds_overrides=None, objective_cls=None, networks=None):
    """(setup, batches, state) on this rank, the setup from textgan.train.setup.build_training (train
    with train_step(setup, batches, state)); the process group is started once. networks: (G, D) to
    train instead of tiny_networks(cfg, generator_cls) (e.g. a tiny cGAN). Batches carry c (C_DIM)."""
    from textgan.losses.objective import GANObjective
    from textgan.runtime import Runtime
    from textgan.train.setup import build_training
    from textgan.train.step import TrainState

    runtime = Runtime.from_env()
    runtime.init_distributed()
    # tiny_networks seeds itself: the same nets whether built before or after build_training's seeding
    setup = build_training(cfg, runtime, c_dim=C_DIM, networks=networks or tiny_networks(cfg, generator_cls),
                           ds_overrides=ds_overrides, objective_cls=objective_cls or GANObjective)
    return setup, SyntheticBatches(runtime.rank, cfg.schedule.batch_gpu), TrainState()


# Under ZeRO-3 DeepSpeed keeps parameters below 1e5 elements whole; all of the tiny nets' are. This
# makes stage 3 partition every one of them, the case the R1 and EMA patterns exist for.
PARTITION_ALL = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}


def snapshot(engines) -> dict:
    """{"G", "D", "G_ema"}: full fp32 state dicts (collective on ZeRO-3: call on every rank)."""
    from textgan.train.engines import full_state_dict

    return {"G": full_state_dict(engines.G.module, engines.G_stage),
            "D": full_state_dict(engines.D.module, engines.D_stage),
            "G_ema": {k: v.detach().clone() for k, v in engines.G_ema.state_dict().items()}}


def floats(stats: dict) -> dict:
    return {k: float(v) for k, v in stats.items()}
