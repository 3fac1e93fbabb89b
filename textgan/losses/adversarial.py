"""Adversarial losses, per sample: each function maps D's logits [N] (or [N, 1]) to losses [N].

Three families, chosen by `kind` (config key `loss.kind`):

* "nonsaturating" (StyleGAN2's logistic loss; Goodfellow et al. 2014, the non-saturating G form):
      D on reals:  softplus(-x) = -log(sigmoid(x))
      D on fakes:  softplus(x)  = -log(1 - sigmoid(x))
      G on fakes:  softplus(-x) = -log(sigmoid(x))
  G's form does not saturate when D confidently rejects the fakes (its gradient stays ~1 there).
* "hinge" (Lim & Ye 2017; SAGAN, BigGAN):
      D on reals:  relu(1 - x)
      D on fakes:  relu(1 + x)
      G on fakes:  -x
* "rpgan" (the relativistic pairing loss, as R3GAN uses it: "The GAN is dead; long live the GAN! A
  Modern GAN Baseline", Huang et al. 2024). Each sample is a pair (x_real, x_fake) and D is asked
  which of the two is real, not whether each one is:
      D on a pair: softplus(x_fake - x_real) = -log(sigmoid(x_real - x_fake))   d_loss_relativistic
      G on a pair: softplus(x_real - x_fake) = -log(sigmoid(x_fake - x_real))   g_loss_relativistic
  Only the difference of the two logits matters, so adding a constant to D's output changes nothing:
  a D logit alone has no meaning under this loss, and d_loss_real / d_loss_fake / g_loss refuse the kind.

The caller takes the mean (or weights samples first); nothing here reduces.
"""

import torch
import torch.nn.functional as F

KINDS = ("nonsaturating", "hinge", "rpgan")
# The kinds whose loss is a function of a (real, fake) pair of logits rather than of one logit.
PAIRED_KINDS = ("rpgan",)


def _flat(logits: torch.Tensor) -> torch.Tensor:
    """D returns [N, 1]; losses are per sample [N]."""
    if logits.ndim == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    if logits.ndim != 1:
        raise ValueError(f"D's logits must have shape [N] or [N, 1], got {list(logits.shape)}.")
    return logits


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown adversarial loss kind {kind!r} (config key 'loss.kind'); use one of {KINDS}.")
    return kind


def is_paired(kind: str) -> bool:
    """Whether `kind`'s losses take a (real, fake) pair of logits (d_loss_relativistic, g_loss_relativistic)."""
    return check_kind(kind) in PAIRED_KINDS


def _unpaired_kind(kind: str, function: str) -> str:
    if is_paired(kind):
        raise ValueError(
            f"{function}() scores one logit, but loss.kind={kind!r} compares a real and a fake logit: "
            f"use d_loss_relativistic(real_logits, fake_logits) / g_loss_relativistic(real_logits, fake_logits)."
        )
    return kind


def d_loss_real(logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss on real images: softplus(-x) (nonsaturating) or relu(1 - x) (hinge). Shape [N]."""
    x = _flat(logits)
    return F.softplus(-x) if _unpaired_kind(kind, "d_loss_real") == "nonsaturating" else F.relu(1.0 - x)


def d_loss_fake(logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss on fake (or mismatched) images: softplus(x) (nonsaturating) or relu(1 + x) (hinge). [N]."""
    x = _flat(logits)
    return F.softplus(x) if _unpaired_kind(kind, "d_loss_fake") == "nonsaturating" else F.relu(1.0 + x)


def g_loss(logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """G's loss on its fakes as D scores them: softplus(-x) (nonsaturating) or -x (hinge). Shape [N]."""
    x = _flat(logits)
    return F.softplus(-x) if _unpaired_kind(kind, "g_loss") == "nonsaturating" else -x


def _pair(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple:
    real, fake = _flat(real_logits), _flat(fake_logits)
    if real.shape != fake.shape:
        raise ValueError(f"a relativistic loss pairs sample i of the reals with sample i of the fakes: "
                         f"got {real.shape[0]} real and {fake.shape[0]} fake logits.")
    return real, fake


def d_loss_relativistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss on pairs (rpgan): softplus(fake_i - real_i), small when D scores the real sample of each
    pair above its fake. Shape [N]; real_logits[i] and fake_logits[i] are one pair."""
    real, fake = _pair(real_logits, fake_logits)
    return F.softplus(fake - real)


def g_loss_relativistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss on pairs (rpgan): softplus(real_i - fake_i), small when D scores G's fake above the real
    sample it is paired with. Shape [N]. The caller passes real logits without a graph (G cannot change
    them, and D is not trained in G's phase)."""
    real, fake = _pair(real_logits, fake_logits)
    return F.softplus(real - fake)
