"""Adversarial losses, regularizers and the GAN objective: pure functions of tensors and modules
(no torch.distributed, no deepspeed, never a backward call)."""

from textgan.losses.adversarial import d_loss_fake, d_loss_real, d_loss_relativistic, g_loss, g_loss_relativistic
from textgan.losses.objective import GANObjective
from textgan.losses.regularizers import l2_penalty, orthogonal_penalty, path_length_penalty, r1_penalty

__all__ = [
    "GANObjective",
    "d_loss_fake",
    "d_loss_real",
    "d_loss_relativistic",
    "g_loss",
    "g_loss_relativistic",
    "l2_penalty",
    "orthogonal_penalty",
    "path_length_penalty",
    "r1_penalty",
]
