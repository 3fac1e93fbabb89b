"""How a recipe's batch, EMA and learning rate follow the world size (the ranks of the allocation).

A recipe names its rule in `schedule.batch_scaling`:
- `global`: the global batch `schedule.batch_size` is fixed; each rank accumulates
  batch_size / (batch_gpu x ranks) micro-batches, which must be whole (else a UsageError naming the
  `--set` fixes and what each changes).
- `per_rank`: the per-rank micro-batch `schedule.batch_gpu` is fixed; accumulation is the smallest
  whole number that reaches `schedule.batch_size`, so the global batch is the smallest multiple of
  batch_gpu x ranks that is at least batch_size: the recipe's batch where the ranks divide it, a
  bigger one on more ranks. It never fails.

`schedule.ema_kimg`, `optim.G_lr` and `optim.D_lr` are the values at the global batch
`schedule.ref_batch_size` (null: the recipe's `schedule.batch_size`, the batch they were tuned at). When
the global batch B differs from that reference R:
- ema_kimg becomes ema_kimg x B / R: the EMA half-life stays the same number of optimizer steps, as
  StyleGAN2-ADA's auto config sets ema_kimg = batch x 10 / 32.
- the learning rates follow `optim.lr_scaling`: none (default; StyleGAN2-ADA keeps lr 0.0025 for
  batches 32 to 64 and more), linear (x B / R) or sqrt (x sqrt(B / R)).
- loss.r1_gamma is not changed: R1 is a mean over the batch, so its strength does not depend on the
  batch; StyleGAN2-ADA's formula gamma = 0.0002 x resolution^2 / batch is a starting point to tune,
  and the recipes state the value they chose.
scale_to_world writes the effective values into the config and sets ref_batch_size to the new global
batch, so the run's config.yaml holds what training used, and scaling it again is a no-op.
"""

import math
from dataclasses import dataclass

from textgan.errors import UsageError

BATCH_SCALINGS = ("global", "per_rank")
LR_SCALINGS = ("none", "linear", "sqrt")


@dataclass(frozen=True)
class WorldBatch:
    """The batch of one world size, and the EMA / learning rates that go with it."""

    ranks: int
    batch_gpu: int
    accumulation: int
    batch_size: int  # global: batch_gpu x ranks x accumulation
    ref_batch_size: int  # the batch the recipe's ema_kimg and lrs are given at
    ema_kimg: float
    G_lr: float
    D_lr: float

    def describe(self, scaling: str, lr_scaling: str) -> str:
        """One line for --dry-run and the job's log."""
        line = (f"global batch {self.batch_size} = batch_gpu {self.batch_gpu} x {self.ranks} rank(s) x "
                f"accumulation {self.accumulation} (schedule.batch_scaling={scaling})")
        if self.batch_size != self.ref_batch_size:
            line += (f"; scaled from batch {self.ref_batch_size}: ema_kimg {self.ema_kimg:g}, "
                     f"lr G {self.G_lr:g} D {self.D_lr:g} (optim.lr_scaling={lr_scaling})")
        return line


def world_batch(cfg, world_size: int) -> WorldBatch:
    """The effective batch, accumulation, ema_kimg and lrs of `cfg` on `world_size` ranks (pure)."""
    sched, optim = cfg.schedule, cfg.optim
    per_step = sched.batch_gpu * world_size
    if sched.batch_scaling == "per_rank":
        accumulation = -(-sched.batch_size // per_step)  # ceil: reach at least batch_size
    else:
        if sched.batch_size % per_step:
            raise UsageError(_indivisible(cfg, world_size))
        accumulation = sched.batch_size // per_step
    batch = per_step * accumulation
    ref = sched.ref_batch_size or sched.batch_size
    lr_factor = {"none": 1.0, "linear": batch / ref, "sqrt": math.sqrt(batch / ref)}[optim.lr_scaling]
    return WorldBatch(ranks=world_size, batch_gpu=sched.batch_gpu, accumulation=accumulation, batch_size=batch,
                      ref_batch_size=ref, ema_kimg=sched.ema_kimg * batch / ref,
                      G_lr=optim.G_lr * lr_factor, D_lr=optim.D_lr * lr_factor)


def scale_to_world(cfg, world_size: int) -> WorldBatch:
    """world_batch, written into cfg: batch_size, ema_kimg, G_lr and D_lr become the effective values and
    ref_batch_size the effective batch (so they stay consistent, and a second call changes nothing)."""
    scaled = world_batch(cfg, world_size)
    cfg.schedule.batch_size = scaled.batch_size
    cfg.schedule.ref_batch_size = scaled.batch_size
    cfg.schedule.ema_kimg = scaled.ema_kimg
    cfg.optim.G_lr, cfg.optim.D_lr = scaled.G_lr, scaled.D_lr
    return scaled


def accumulation_steps(cfg, world_size: int) -> int:
    """Gradient accumulation steps of an already scaled config (what the engines are built with):
    batch_size must be batch_gpu x world_size x a whole number, whatever the scaling rule."""
    per_step = cfg.schedule.batch_gpu * world_size
    if cfg.schedule.batch_size % per_step:
        raise UsageError(_indivisible(cfg, world_size))
    return cfg.schedule.batch_size // per_step


def _indivisible(cfg, world_size: int) -> str:
    """The error for a global batch the ranks do not divide, with the `--set` fixes and what each changes."""
    batch, gpu, given_at = cfg.schedule.batch_size, cfg.schedule.batch_gpu, cfg.schedule.ref_batch_size
    per_step = gpu * world_size
    rounded = -(-batch // per_step) * per_step  # the smallest multiple of batch_gpu x ranks above batch_size

    def ema(new_batch: int, ref: int) -> str:
        return f"ema_kimg {cfg.schedule.ema_kimg * new_batch / ref:g}" + (
            f" (scaled from batch {ref})" if new_batch != ref else " (as given)")

    fixes = [f"  --set schedule.batch_scaling=per_rank  -> global batch {rounded}, accumulation {rounded // per_step}, "
             f"{ema(rounded, given_at or batch)}"]
    smaller = [g for g in range(gpu - 1, 0, -1) if batch % (g * world_size) == 0]
    if smaller:
        fixes.append(f"  --set schedule.batch_gpu={smaller[0]}  -> global batch {batch} (unchanged), "
                     f"accumulation {batch // (smaller[0] * world_size)}")
    # a new batch_size is also the batch ema_kimg is given at, unless ref_batch_size is set
    fixes.append(f"  --set schedule.batch_size={rounded}  -> global batch {rounded}, "
                 f"accumulation {rounded // per_step}, "
                 f"{ema(rounded, given_at or rounded)}")
    return (f"config key 'schedule.batch_size' ({batch}) must be a multiple of batch_gpu x ranks = "
            f"{gpu} x {world_size} = {per_step} with schedule.batch_scaling=global (the global batch is fixed). "
            f"Any one of these fixes it:\n" + "\n".join(fixes))
