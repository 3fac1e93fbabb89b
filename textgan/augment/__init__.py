"""Augmentation of everything D sees: ADA (textgan.augment.ada) or DiffAugment (textgan.augment.diff),
chosen by config key `augment.kind` (none | ada | diffaugment); the research compares runs without ADA."""

from typing import Optional

import torch
from torch import nn

from textgan.augment.ada import ADA_OPS, AugmentPipe
from textgan.augment.diff import POLICIES, DiffAugment, parse_policy
from textgan.errors import UsageError

__all__ = ["ADA_OPS", "POLICIES", "AugmentPipe", "DiffAugment", "build_augment"]

KINDS = ("none", "ada", "diffaugment")


def build_augment(augment_cfg, generator: Optional[torch.Generator] = None) -> Optional[nn.Module]:
    """The module for TrainConfig.augment, or None for kind 'none'. ADA starts at p = 0 (a resumed run
    restores p from the checkpointed buffer). UsageError naming the key for values the config schema
    cannot check by type."""
    kind = augment_cfg.kind
    if kind == "none":
        return None
    if kind == "ada":
        if not 0.0 <= augment_cfg.ada_target <= 1.0:
            raise UsageError(f"config key 'augment.ada_target' must be in [0, 1], got {augment_cfg.ada_target}.")
        if augment_cfg.ada_kimg <= 0:
            raise UsageError(f"config key 'augment.ada_kimg' must be > 0, got {augment_cfg.ada_kimg}.")
        if augment_cfg.ada_interval < 1:
            raise UsageError(f"config key 'augment.ada_interval' must be >= 1, got {augment_cfg.ada_interval}.")
        return AugmentPipe(
            p=0.0,
            ada_target=augment_cfg.ada_target,
            ada_kimg=augment_cfg.ada_kimg,
            ada_interval=augment_cfg.ada_interval,
            generator=generator,
        )
    if kind == "diffaugment":
        try:
            parse_policy(augment_cfg.diffaugment)
        except ValueError as e:
            raise UsageError(f"config key 'augment.diffaugment': {e}") from e
        return DiffAugment(augment_cfg.diffaugment, generator=generator)
    raise UsageError(f"config key 'augment.kind' is {kind!r}; allowed: {', '.join(KINDS)}")
