"""Learning-rate schedules as multipliers of the configured base rate (optim.G_lr / optim.D_lr),
a function of progress in kimg, so they survive resume and do not depend on the batch size.

* constant: 1.
* warmup:   linear from 0 to 1 over optim.warmup_kimg, then 1.
* cosine:   the same warm-up, then half a cosine from 1 to 0 at schedule.total_kimg (and 0 after).
"""

import math

from textgan.errors import UsageError

KINDS = ("constant", "warmup", "cosine")


def lr_multiplier(kind: str, cur_kimg: float, total_kimg: float, warmup_kimg: float = 0.0) -> float:
    if kind not in KINDS:
        raise UsageError(f"config key 'optim.lr_schedule' is {kind!r}; allowed: {', '.join(KINDS)}")
    if warmup_kimg < 0:
        raise UsageError(f"config key 'optim.warmup_kimg' must be >= 0, got {warmup_kimg}")
    if kind == "constant":
        return 1.0
    if cur_kimg < warmup_kimg:
        return cur_kimg / warmup_kimg
    if kind == "warmup":
        return 1.0
    if total_kimg <= warmup_kimg:
        raise UsageError(
            f"the cosine schedule needs schedule.total_kimg ({total_kimg}) > optim.warmup_kimg ({warmup_kimg})"
        )
    progress = min(1.0, (cur_kimg - warmup_kimg) / (total_kimg - warmup_kimg))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer, base_lr: float, multiplier: float) -> float:
    """Set every parameter group's lr to base_lr * multiplier (works on a torch optimizer and on the
    DeepSpeed engine's wrapped one, which exposes the same param_groups). Returns the lr set."""
    lr = base_lr * multiplier
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
